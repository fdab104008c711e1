// Real FFTs for realtime_ser/_kernel.c: a C interface to pocketfft's in-place real transform
// (the C++ header numpy and scipy use, vendored in _vendor/pocketfft, BSD licence).
//
// ser_rfft transforms one real frame in place into FFTPACK's half-complex order:
// r0, r1, i1, r2, i2, ..., r(n/2) for an even length n. ser_rfft_lanes transforms
// ser_fft_lanes() interleaved frames at once, one per lane of pocketfft's SIMD vector type
// (as numpy's batched rfft does), with the same arithmetic per frame. No threads, no plan
// cache: the kernel makes one plan per length at configuration and keeps it.
#define POCKETFFT_NO_MULTITHREADING
#define POCKETFFT_CACHE_SIZE 0
#include <exception>

#include "_vendor/pocketfft/pocketfft_hdronly.h"

using plan_t = pocketfft::detail::pocketfft_r<double>;
using vec_t = pocketfft::detail::vtype_t<double>;
constexpr size_t LANES = pocketfft::detail::VLEN<double>::val;

extern "C" {

void *ser_fft_plan(size_t n)
{
    try {
        return new plan_t(n);
    } catch (const std::exception &) {
        return nullptr;
    }
}

void ser_fft_free(void *plan) { delete static_cast<plan_t *>(plan); }

size_t ser_fft_lanes(void) { return LANES; }

int ser_rfft(void *plan, double *data)
{
    try {
        static_cast<plan_t *>(plan)->exec(data, 1.0, true);
        return 0;
    } catch (const std::exception &) {
        return -1;
    }
}

// ser_fft_lanes() frames at once, interleaved in place: data[i * lanes + f] is sample i of frame f
// (aligned to lanes * 8 bytes). With one lane, one plain frame.
int ser_rfft_lanes(void *plan, double *data)
{
    try {
        if (LANES < 2)
            static_cast<plan_t *>(plan)->exec(data, 1.0, true);
        else
            static_cast<plan_t *>(plan)->exec(reinterpret_cast<vec_t *>(data), 1.0, true);
        return 0;
    } catch (const std::exception &) {
        return -1;
    }
}

}  // extern "C"
