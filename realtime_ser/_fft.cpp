// Real FFTs for realtime_ser/_kernel.c: a C interface to pocketfft's in-place real transform
// (the C++ header numpy and scipy use, vendored in _vendor/pocketfft, BSD licence).
//
// ser_rfft transforms one real frame in place into FFTPACK's half-complex order:
// r0, r1, i1, r2, i2, ..., r(n/2) for an even length n; ser_rfft2 two frames at once, in the
// two lanes of pocketfft's SIMD vector type (as numpy's batched rfft does), with the same
// arithmetic per frame. No threads, no plan cache: the kernel makes one plan per length at
// configuration and keeps it.
#define POCKETFFT_NO_MULTITHREADING
#define POCKETFFT_CACHE_SIZE 0
#include <exception>

#include "_vendor/pocketfft/pocketfft_hdronly.h"

using plan_t = pocketfft::detail::pocketfft_r<double>;

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

int ser_rfft(void *plan, double *data)
{
    try {
        static_cast<plan_t *>(plan)->exec(data, 1.0, true);
        return 0;
    } catch (const std::exception &) {
        return -1;
    }
}


// Two frames of the same length at once (SIMD lanes where the compiler has them); vbuf: scratch of
// 2 n doubles, 16-byte aligned.
int ser_rfft2(void *plan, double *a, double *b, double *vbuf)
{
    using vt = pocketfft::detail::vtype_t<double>;
    constexpr size_t lanes = pocketfft::detail::VLEN<double>::val;
    plan_t *p = static_cast<plan_t *>(plan);
    size_t n = p->length();
    if (lanes < 2) return ser_rfft(plan, a) | ser_rfft(plan, b);
    try {
        if (lanes == 2) {
            vt *v = reinterpret_cast<vt *>(vbuf);
            for (size_t i = 0; i < n; i++) v[i] = vt{a[i], b[i]};
            p->exec(v, 1.0, true);
            for (size_t i = 0; i < n; i++) {
                a[i] = v[i][0];
                b[i] = v[i][1];
            }
            return 0;
        }
        return ser_rfft(plan, a) | ser_rfft(plan, b);
    } catch (const std::exception &) {
        return -1;
    }
}

}  // extern "C"
