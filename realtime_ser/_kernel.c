/* Compiled inner loops of realtime_ser.features (the "kernel" implementation).
 *
 * features.py holds the reference implementation in numpy and every constant and table
 * (handed over once by configure()); this file re-implements its loops frame by frame,
 * with no temporaries, so that a 0.5 s hop of new frames costs a fraction of a millisecond:
 *
 *     rows         samples -> per frame: windowed spectrum (pocketfft, _fft.cpp), log-mel, MFCC,
 *                  spectral shape, energy, zero-crossing rate; pitch frame -> power spectrum ->
 *                  autocorrelation (the forward transform of the even-extended power spectrum:
 *                  a real even sequence's forward and inverse DFTs agree up to 1/N) -> voicing, F0
 *     functionals  the window's per-frame descriptors -> its feature vector
 *
 * Sums that numpy computes by pairwise summation (1-D and row reductions) use the same pairwise
 * scheme, and column sums run in row order as numpy's axis-0 reductions do, so the functionals
 * of a given analysis are bit-identical to the reference; matrix products (BLAS in numpy), the
 * FFTs' internals and libm differ in the last bits of the per-frame values (about 1e-13).
 * tests/test_kernel.py bounds the differences.
 *
 * Plain C99 plus the CPython buffer protocol: no numpy headers. Every array argument is a
 * C-contiguous buffer whose size is checked here. Compiled without FMA contraction
 * (-ffp-contract=off, setup.py) so that a*b + c rounds as numpy's loops do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define PW_BLOCKSIZE 128 /* numpy's pairwise summation block */

/* numpy's pairwise_sum for doubles with a stride (in elements). */
static double pairwise_sum(const double *a, Py_ssize_t n, Py_ssize_t stride)
{
    if (n < 8) {
        double res = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) res += a[i * stride];
        return res;
    }
    if (n <= PW_BLOCKSIZE) {
        double r[8];
        Py_ssize_t i;
        for (int j = 0; j < 8; j++) r[j] = a[j * stride];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[(i + j) * stride];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i * stride];
        return res;
    }
    Py_ssize_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2, stride) + pairwise_sum(a + n2 * stride, n - n2, stride);
}

/* Natural log of a positive, normal, finite x: fdlibm's e_log.c algorithm (error < 1 ulp) without its
 * branches, inlined (libm's log is a call per spectral bin, 257 per frame). */
#define DB_PER_NEPER 4.3429448190325182 /* 10 / ln(10): 10 log10(x) = DB_PER_NEPER ln(x) */

static inline double log_pos(double x)
{
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01, Lg3 = 2.857142874366239149e-01,
                 Lg4 = 2.222219843214978396e-01, Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    uint64_t bits, mbits, kbits;
    memcpy(&bits, &x, sizeof bits);
    /* x = 2^k m with m in [sqrt(2)/2, sqrt(2)): the offset carries mantissas >= sqrt(2) into the exponent */
    uint64_t top = (bits + 0x00095f619980c433ULL) >> 52;
    mbits = bits - ((top - 1023) << 52);
    kbits = 0x4330000000000000ULL | top; /* 2^52 + top, exactly: k without an int-to-double conversion */
    double m, k;
    memcpy(&m, &mbits, sizeof m);
    memcpy(&k, &kbits, sizeof k);
    k = k - 4503599627370496.0 - 1023.0;
    double f = m - 1.0, s = f / (2.0 + f), z = s * s, w = z * z;
    double t1 = w * (Lg2 + w * (Lg4 + w * Lg6)), t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    double r = t2 + t1, hfsq = 0.5 * f * f;
    return k * ln2_hi - ((hfsq - (s * (hfsq + r) + k * ln2_lo)) - f);
}


/* ------------------------------------------------------------------ buffers */

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static void release(Buf *bufs, int n)
{
    for (int i = 0; i < n; i++)
        if (bufs[i].held) {
            PyBuffer_Release(&bufs[i].view);
            bufs[i].held = 0;
        }
}

/* Take a C-contiguous buffer of at least ``min_items`` items of ``itemsize`` bytes. */
static int take(PyObject *obj, Buf *b, int writable, Py_ssize_t itemsize, Py_ssize_t min_items, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) return -1;
    b->held = 1;
    if (b->view.len % itemsize != 0 || b->view.len / itemsize < min_items) {
        PyErr_Format(PyExc_ValueError, "kernel: %s holds %zd bytes, expected at least %zd items of %zd bytes", name,
                     b->view.len, min_items, itemsize);
        return -1;
    }
    return 0;
}

#define D(b) ((double *)(b).view.buf)
#define NITEMS(b, size) ((b).view.len / (Py_ssize_t)(size))

/* Frames are analysed NL at a time, interleaved: element i of frame f of a group sits at [i * NL + f].
 * NL is the FFT's SIMD width (pocketfft's VLEN<double>, mirrored here), so the transforms run NL frames
 * at once, and every loop below runs over the NL lanes innermost: the same arithmetic, in the same order,
 * per frame as a frame-by-frame loop (the values do not depend on NL), in vector registers. */
#if defined(__INTEL_COMPILER) || !(defined(__GNUC__) || defined(__clang__))
#define NL 1
#elif defined(__AVX512F__)
#define NL 8
#elif defined(__AVX__)
#define NL 4
#elif defined(__SSE2__) || defined(__VSX__) || defined(__ARM_NEON__) || defined(__ARM_NEON)
#define NL 2
#else
#define NL 1
#endif

/* ------------------------------------------------------------------ configuration */

/* Real FFT in place, half-complex output (_fft.cpp). */
void *ser_fft_plan(size_t n);
void ser_fft_free(void *plan);
int ser_rfft(void *plan, double *data);
size_t ser_fft_lanes(void);
int ser_rfft_lanes(void *plan, double *data);


#define N_SHAPE 8 /* centroid, spread, rolloff85, flatness, entropy, slope, alpha, hammarberg */

/* The analysis constants, copied from features.py by configure() (once, at its import). */
typedef struct {
    int ready;
    Py_ssize_t hop, nfft_s, nfft_p, frame_p, core_start, core_len, n_mels, n_mfcc, nb, lag_min, lag_max;
    Py_ssize_t n_lld, c_mfcc, c_shape, c_energy, c_zcr, c_voicing, c_f0, bands[8];
    double amin, eps, energy_floor, octave_tol, sr;
    double *spec_win, *pitch_win, *melfb, *dct, *freqs, *freqs_sq, *slope_w, *inv_win_acf;
    double *dct1_cos, *dct1_sin; /* 2 cos(j pi / M), 2 sin(j pi / M), j < M / 2, M = nfft_p / 2 (dct1) */
    int64_t *mel_lo, *mel_hi;
    void *plan_s, *plan_p, *plan_h; /* real FFTs of nfft_s, nfft_p and nfft_p / 2 points */
} Config;

static Config cfg;

static double *copy_doubles(PyObject *obj, Py_ssize_t n, const char *name)
{
    Buf b;
    memset(&b, 0, sizeof b);
    if (take(obj, &b, 0, 8, n, name) < 0) {
        release(&b, 1);
        return NULL;
    }
    if (NITEMS(b, 8) != n) {
        PyErr_Format(PyExc_ValueError, "kernel.configure: %s has %zd items, expected %zd", name, NITEMS(b, 8), n);
        release(&b, 1);
        return NULL;
    }
    double *out = PyMem_Malloc(sizeof(double) * (size_t)n);
    if (out == NULL)
        PyErr_NoMemory();
    else
        memcpy(out, b.view.buf, sizeof(double) * (size_t)n);
    release(&b, 1);
    return out;
}

/* configure(hop, spec_win, core_start, core_len, pitch_win, pitch_nfft, melfb (n_mels * nb), n_mels,
 *           dct (n_mels * n_mfcc), n_mfcc, freqs (nb), freqs_sq, slope_w, bands (8 ints), amin, power_eps,
 *           energy_floor, win_acf (lag_max + 2), lag_min, lag_max, octave_tol, sample_rate,
 *           n_lld, (col_mfcc, col_shape, col_energy, col_zcr, col_voicing, col_f0)) */
static PyObject *k_configure(PyObject *self, PyObject *args)
{
    PyObject *o_sw, *o_pw, *o_fb, *o_dct, *o_f, *o_f2, *o_slope, *o_wacf;
    Config c;
    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTuple(args, "nOnnOnOnOnOOO(nnnnnnnn)dddOnnddn(nnnnnn)", &c.hop, &o_sw, &c.core_start, &c.core_len,
                          &o_pw, &c.nfft_p, &o_fb, &c.n_mels, &o_dct, &c.n_mfcc, &o_f, &o_f2, &o_slope, &c.bands[0],
                          &c.bands[1], &c.bands[2], &c.bands[3], &c.bands[4], &c.bands[5], &c.bands[6], &c.bands[7],
                          &c.amin, &c.eps, &c.energy_floor, &o_wacf, &c.lag_min, &c.lag_max, &c.octave_tol, &c.sr,
                          &c.n_lld, &c.c_mfcc, &c.c_shape, &c.c_energy, &c.c_zcr, &c.c_voicing, &c.c_f0))
        return NULL;
    Buf sw, pw, f;
    memset(&sw, 0, sizeof sw);
    memset(&pw, 0, sizeof pw);
    memset(&f, 0, sizeof f);
    int ok = take(o_sw, &sw, 0, 8, 2, "spec_win") == 0 && take(o_pw, &pw, 0, 8, 2, "pitch_win") == 0 &&
             take(o_f, &f, 0, 8, 2, "freqs") == 0;
    if (ok) {
        c.nfft_s = NITEMS(sw, 8);
        c.frame_p = NITEMS(pw, 8);
        c.nb = NITEMS(f, 8);
    }
    release(&sw, 1);
    release(&pw, 1);
    release(&f, 1);
    if (!ok) return NULL;
    Py_ssize_t cols[6] = {c.c_mfcc, c.c_shape, c.c_energy, c.c_zcr, c.c_voicing, c.c_f0};
    int bad = c.hop < 1 || c.nfft_s % 2 || c.nfft_p % 2 || c.nb != c.nfft_s / 2 + 1 || c.frame_p > c.nfft_p ||
              c.core_start < 0 || c.core_len < 2 || c.core_start + c.core_len > c.nfft_s || c.n_mels < 2 || c.n_mels > c.nb ||
              c.n_mfcc < 1 || c.lag_min < 1 || c.lag_max <= c.lag_min || c.lag_max + 2 > c.nfft_p / 2 + 1 ||
              c.c_mfcc + c.n_mfcc > c.n_lld || c.c_shape + N_SHAPE > c.n_lld;
    for (int i = 0; i < 6; i++) bad |= cols[i] < 0 || cols[i] >= c.n_lld;
    for (int i = 0; i < 8; i += 2) bad |= c.bands[i] < 0 || c.bands[i + 1] > c.nb || c.bands[i] >= c.bands[i + 1];
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "kernel.configure: inconsistent sizes");
        return NULL;
    }
    double *wacf = NULL;
    if (!(c.spec_win = copy_doubles(o_sw, c.nfft_s, "spec_win")) ||
        !(c.pitch_win = copy_doubles(o_pw, c.frame_p, "pitch_win")) ||
        !(c.melfb = copy_doubles(o_fb, c.n_mels * c.nb, "melfb")) ||
        !(c.dct = copy_doubles(o_dct, c.n_mels * c.n_mfcc, "dct")) || !(c.freqs = copy_doubles(o_f, c.nb, "freqs")) ||
        !(c.freqs_sq = copy_doubles(o_f2, c.nb, "freqs_sq")) ||
        !(c.slope_w = copy_doubles(o_slope, c.n_mels, "slope_w")) ||
        !(wacf = copy_doubles(o_wacf, c.lag_max + 2, "win_acf")))
        goto fail;
    c.inv_win_acf = wacf;
    for (Py_ssize_t i = 0; i < c.lag_max + 2; i++) c.inv_win_acf[i] = 1.0 / wacf[i];
    c.mel_lo = PyMem_Malloc(sizeof(int64_t) * (size_t)c.n_mels);
    c.mel_hi = PyMem_Malloc(sizeof(int64_t) * (size_t)c.n_mels);
    if (!c.mel_lo || !c.mel_hi) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t m = 0; m < c.n_mels; m++) { /* each filter's non-zero bins */
        const double *w = c.melfb + m * c.nb;
        Py_ssize_t lo = 0, hi = c.nb;
        while (lo < c.nb && w[lo] == 0.0) lo++;
        while (hi > lo && w[hi - 1] == 0.0) hi--;
        c.mel_lo[m] = lo;
        c.mel_hi[m] = hi;
    }
    if (c.nfft_p % 4) {
        PyErr_SetString(PyExc_ValueError, "kernel.configure: the pitch FFT length must be a multiple of 4");
        goto fail;
    }
    const Py_ssize_t half = c.nfft_p / 2;
    c.dct1_cos = PyMem_Malloc(sizeof(double) * (size_t)(half / 2));
    c.dct1_sin = PyMem_Malloc(sizeof(double) * (size_t)(half / 2));
    if (!c.dct1_cos || !c.dct1_sin) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t j = 0; j < half / 2; j++) {
        c.dct1_cos[j] = 2.0 * cos((double)j * M_PI / (double)half);
        c.dct1_sin[j] = 2.0 * sin((double)j * M_PI / (double)half);
    }
    if (ser_fft_lanes() != NL) { /* _kernel.c and _fft.cpp compiled for different vector widths */
        PyErr_Format(PyExc_RuntimeError, "kernel.configure: the FFT has %zu lanes, the kernel %d",
                     ser_fft_lanes(), NL);
        goto fail;
    }
    c.plan_s = ser_fft_plan((size_t)c.nfft_s);
    c.plan_p = ser_fft_plan((size_t)c.nfft_p);
    c.plan_h = ser_fft_plan((size_t)half);
    if (!c.plan_s || !c.plan_p || !c.plan_h) {
        PyErr_SetString(PyExc_MemoryError, "kernel.configure: no FFT plan");
        goto fail;
    }
    c.ready = 1;
    cfg = c; /* configured once, at import; a second call replaces the tables (the old ones are kept) */
    Py_RETURN_NONE;
fail:
    PyMem_Free(c.spec_win);
    PyMem_Free(c.pitch_win);
    PyMem_Free(c.melfb);
    PyMem_Free(c.dct);
    PyMem_Free(c.freqs);
    PyMem_Free(c.freqs_sq);
    PyMem_Free(c.slope_w);
    PyMem_Free(wacf);
    PyMem_Free(c.mel_lo);
    PyMem_Free(c.mel_hi);
    PyMem_Free(c.dct1_cos);
    PyMem_Free(c.dct1_sin);
    if (c.plan_s) ser_fft_free(c.plan_s);
    if (c.plan_p) ser_fft_free(c.plan_p);
    if (c.plan_h) ser_fft_free(c.plan_h);
    return NULL;
}

/* ------------------------------------------------------------------ frame analysis */

#define LANES(f) for (int f = 0; f < NL; f++)

/* numpy's pairwise_sum, for NL interleaved sequences of n elements at once: out[f] = sum of a[i * NL + f]. */
static void pairwise_sum_lanes(const double *a, Py_ssize_t n, double *out)
{
    if (n < 8) {
        double res[NL];
        LANES(f) res[f] = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) LANES(f) res[f] += a[i * NL + f];
        LANES(f) out[f] = res[f];
        return;
    }
    if (n <= PW_BLOCKSIZE) {
        double r[8][NL];
        Py_ssize_t i;
        for (int j = 0; j < 8; j++) LANES(f) r[j][f] = a[j * NL + f];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) LANES(f) r[j][f] += a[(i + j) * NL + f];
        LANES(f) out[f] = ((r[0][f] + r[1][f]) + (r[2][f] + r[3][f])) + ((r[4][f] + r[5][f]) + (r[6][f] + r[7][f]));
        for (; i < n; i++) LANES(f) out[f] += a[i * NL + f];
        return;
    }
    Py_ssize_t n2 = n / 2;
    n2 -= n2 % 8;
    double lo[NL], hi[NL];
    pairwise_sum_lanes(a, n2, lo);
    pairwise_sum_lanes(a + n2 * NL, n - n2, hi);
    LANES(f) out[f] = lo[f] + hi[f];
}

/* Power spectra (n/2 + 1 bins) of NL interleaved half-complex FFT outputs of even length n. */
static void halfcomplex_power(const double *h, Py_ssize_t n, double *power)
{
    LANES(f) power[f] = h[f] * h[f] + 0.0;
    for (Py_ssize_t k = 1; k < n / 2; k++) {
        const double *re = h + (2 * k - 1) * NL, *im = h + 2 * k * NL;
        LANES(f) power[k * NL + f] = re[f] * re[f] + im[f] * im[f];
    }
    LANES(f) power[n / 2 * NL + f] = h[(n - 1) * NL + f] * h[(n - 1) * NL + f] + 0.0;
}

/* DCT-I of x[0 .. M] in place, M = nfft_p / 2: y[k] = x[0] + (-1)^k x[M] + 2 sum_{0<j<M} x[j] cos(pi j k / M),
 * i.e. the real DFT of the even extension of x (length 2M), from one real FFT of M points (FFTPACK's
 * cost routine): dct1_pre, the FFT of x[0 .. M-1] in place, dct1_post. NL interleaved sequences. */
static void dct1_pre(double *x, double *c1)
{
    const Py_ssize_t M = cfg.nfft_p / 2;
    LANES(f) {
        c1[f] = x[f] - x[M * NL + f];
        x[f] = x[f] + x[M * NL + f];
    }
    for (Py_ssize_t j = 1; j < M / 2; j++) {
        double *a = x + j * NL, *b = x + (M - j) * NL;
        const double wc = cfg.dct1_cos[j], ws = cfg.dct1_sin[j];
        LANES(f) {
            double t1 = a[f] + b[f], t2 = a[f] - b[f];
            c1[f] += wc * t2;
            t2 = ws * t2;
            a[f] = t1 - t2;
            b[f] = t1 + t2;
        }
    }
    LANES(f) x[M / 2 * NL + f] = x[M / 2 * NL + f] + x[M / 2 * NL + f];
}

static void dct1_post(double *x, const double *c1)
{
    const Py_ssize_t M = cfg.nfft_p / 2;
    double xim2[NL];
    LANES(f) {
        xim2[f] = x[NL + f];
        x[NL + f] = c1[f];
    }
    for (Py_ssize_t i = 3; i < M; i += 2)
        LANES(f) {
            double xi = x[i * NL + f];
            x[i * NL + f] = x[(i - 2) * NL + f] - x[(i - 1) * NL + f];
            x[(i - 1) * NL + f] = xim2[f];
            xim2[f] = xi;
        }
    LANES(f) x[M * NL + f] = xim2[f];
}

/* Energy and zero-crossing rate of one spectral frame's core (samples x[core_start ...]). */
static void energy_zcr(const double *x, double *sq, double *row)
{
    const double *core = x + cfg.core_start;
    Py_ssize_t n = cfg.core_len, changes = 0;
    for (Py_ssize_t i = 0; i < n; i++) sq[i] = core[i] * core[i];
    double ms = pairwise_sum(sq, n, 1) / (double)n;
    double e = ms > 0 ? 10.0 * log10(ms > 1e-30 ? ms : 1e-30) : cfg.energy_floor;
    row[cfg.c_energy] = e > cfg.energy_floor ? e : cfg.energy_floor;
    for (Py_ssize_t i = 1; i < n; i++) { /* sign bits, as integers: the loop vectorises */
        uint64_t a, b;
        memcpy(&a, core + i, sizeof a);
        memcpy(&b, core + i - 1, sizeof b);
        changes += (Py_ssize_t)((a ^ b) >> 63);
    }
    row[cfg.c_zcr] = (double)changes / (double)(n - 1);
}

/* Scratch of one group of frames (interleaved, NL lanes). */
typedef struct {
    double *power, *p, *lnp, *lm, *mel, *mfcc, *seg;
} GroupScratch;

/* Log-mel, MFCC and spectral shape of NL interleaved power spectra; rows[f] receives frame f's values
 * (NULL: an idle lane). */
static void spectral(GroupScratch *g, double *logmel[NL], double *rows[NL])
{
    const Py_ssize_t nb = cfg.nb, n_mels = cfg.n_mels, n_mfcc = cfg.n_mfcc;
    const double *power = g->power;
    double *p = g->p, *lnp = g->lnp, *lm = g->lm, *mel = g->mel, *mfcc = g->mfcc;
    for (Py_ssize_t m = 0; m < n_mels; m++) {
        const double *w = cfg.melfb + m * nb;
        double acc[NL];
        LANES(f) acc[f] = 0.0;
        for (int64_t k = cfg.mel_lo[m]; k < cfg.mel_hi[m]; k++) LANES(f) acc[f] += power[k * NL + f] * w[k];
        LANES(f) mel[m * NL + f] = acc[f] > cfg.amin ? acc[f] : cfg.amin;
    }
    for (Py_ssize_t i = 0; i < n_mels * NL; i++) lm[i] = DB_PER_NEPER * log_pos(mel[i]);
    for (Py_ssize_t i = 0; i < n_mels * NL; i++)
        if (!(mel[i] <= DBL_MAX)) lm[i] = 10.0 * log10(mel[i]); /* a mel energy that overflowed */
    for (Py_ssize_t c = 0; c < n_mfcc; c++) { /* each coefficient summed over bands in order */
        double acc[NL];
        LANES(f) acc[f] = 0.0;
        for (Py_ssize_t m = 0; m < n_mels; m++) {
            const double d = cfg.dct[m * n_mfcc + c];
            LANES(f) acc[f] += lm[m * NL + f] * d;
        }
        LANES(f) mfcc[c * NL + f] = acc[f];
    }
    /* shape; the normalised spectrum p / total is never stored: sums of p are scaled instead */
    for (Py_ssize_t i = 0; i < nb * NL; i++) p[i] = power[i] + cfg.eps;
    double lo = p[0], hi = p[0];
    for (Py_ssize_t i = 0; i < nb * NL; i++) {
        lnp[i] = log_pos(p[i]);
        lo = p[i] < lo ? p[i] : lo;
        hi = p[i] > hi ? p[i] : hi;
    }
    if (!(lo >= DBL_MIN && hi <= DBL_MAX)) /* inf (or nan) from huge samples: libm's log for those */
        for (Py_ssize_t i = 0; i < nb * NL; i++)
            if (!(p[i] >= DBL_MIN && p[i] <= DBL_MAX)) lnp[i] = log(p[i]);
    double total[NL], inv_total[NL], s1[NL], s2[NL], cross[NL], cum[NL], ln_sum[NL], lm_mean[NL], slope[NL];
    double lo_band[NL], hi_band[NL], peak_lo[NL], peak_hi[NL];
    Py_ssize_t roll[NL];
    pairwise_sum_lanes(p, nb, total);
    LANES(f) {
        inv_total[f] = 1.0 / total[f];
        s1[f] = s2[f] = cross[f] = cum[f] = slope[f] = 0.0;
        roll[f] = -1;
    }
    for (Py_ssize_t k = 0; k < nb; k++) {
        const double fk = cfg.freqs[k], fk2 = cfg.freqs_sq[k];
        LANES(f) {
            const double v = p[k * NL + f];
            s1[f] += v * fk;
            s2[f] += v * fk2;
            cross[f] += v * lnp[k * NL + f];
            cum[f] += v * inv_total[f];
            roll[f] = (roll[f] < 0 && cum[f] >= 0.85) ? k : roll[f];
        }
    }
    pairwise_sum_lanes(lnp, nb, ln_sum);
    pairwise_sum_lanes(lm, n_mels, lm_mean);
    LANES(f) lm_mean[f] = lm_mean[f] / (double)n_mels;
    for (Py_ssize_t m = 0; m < n_mels; m++) {
        const double w = cfg.slope_w[m];
        LANES(f) slope[f] += (lm[m * NL + f] - lm_mean[f]) * w;
    }
    const Py_ssize_t *bd = cfg.bands;
    pairwise_sum_lanes(p + bd[0] * NL, bd[1] - bd[0], lo_band);
    pairwise_sum_lanes(p + bd[2] * NL, bd[3] - bd[2], hi_band);
    LANES(f) {
        peak_lo[f] = p[bd[4] * NL + f];
        peak_hi[f] = p[bd[6] * NL + f];
    }
    for (Py_ssize_t k = bd[4]; k < bd[5]; k++) LANES(f) peak_lo[f] = p[k * NL + f] > peak_lo[f] ? p[k * NL + f] : peak_lo[f];
    for (Py_ssize_t k = bd[6]; k < bd[7]; k++) LANES(f) peak_hi[f] = p[k * NL + f] > peak_hi[f] ? p[k * NL + f] : peak_hi[f];
    const double ln10 = log(10.0), ln_nb = log((double)nb);
    LANES(f) {
        if (rows[f] == NULL) continue;
        double *row = rows[f], *sh = row + cfg.c_shape;
        for (Py_ssize_t m = 0; m < n_mels; m++) logmel[f][m] = lm[m * NL + f];
        for (Py_ssize_t c = 0; c < n_mfcc; c++) row[cfg.c_mfcc + c] = mfcc[c * NL + f];
        double centroid = s1[f] * inv_total[f], var = s2[f] * inv_total[f] - centroid * centroid;
        sh[0] = centroid;
        sh[1] = sqrt(var > 0.0 ? var : 0.0);
        sh[2] = cfg.freqs[roll[f] < 0 ? 0 : roll[f]];
        sh[3] = 10.0 * (ln_sum[f] / (double)nb / ln10 - log10(total[f] / (double)nb));
        sh[4] = (log(total[f]) - cross[f] * inv_total[f]) / ln_nb;
        sh[5] = slope[f];
        sh[6] = 10.0 * log10(lo_band[f] / hi_band[f]);
        sh[7] = 10.0 * log10(peak_lo[f] / peak_hi[f]);
    }
}

/* Voicing strength and F0 of NL frames from their autocorrelations times nfft_p (interleaved, lags
 * 0 .. lag_max + 1), window-corrected and normalised: features._pitch's peak picking. */
static void pick_pitch(const double *acf, GroupScratch *g, double *rows[NL])
{
    const Py_ssize_t L = cfg.lag_max - cfg.lag_min + 3;
    double *seg = g->seg, scale[NL], best[NL], bar[NL];
    Py_ssize_t idx[NL];
    LANES(f) {
        double a0 = acf[f] / (double)cfg.nfft_p;
        scale[f] = 1.0 / ((double)cfg.nfft_p * (a0 > 1e-20 ? a0 : 1e-20));
        best[f] = -INFINITY;
        idx[f] = -1;
    }
    for (Py_ssize_t i = 0; i < L; i++) {
        const Py_ssize_t lag = cfg.lag_min - 1 + i;
        const double w = cfg.inv_win_acf[lag];
        LANES(f) seg[i * NL + f] = acf[lag * NL + f] * scale[f] * w;
    }
    for (Py_ssize_t i = 1; i < L - 1; i++)
        LANES(f) {
            const double v = seg[i * NL + f];
            const int peak = v > seg[(i - 1) * NL + f] && v >= seg[(i + 1) * NL + f];
            best[f] = (peak && v > best[f]) ? v : best[f];
        }
    LANES(f) bar[f] = cfg.octave_tol * best[f];
    for (Py_ssize_t i = 1; i < L - 1; i++)
        LANES(f) {
            const double v = seg[i * NL + f];
            const int ok = v > seg[(i - 1) * NL + f] && v >= seg[(i + 1) * NL + f] && v >= bar[f];
            idx[f] = (idx[f] < 0 && ok) ? i - 1 : idx[f];
        }
    LANES(f) {
        if (rows[f] == NULL) continue;
        const int has_peak = idx[f] >= 0;
        const Py_ssize_t i = has_peak ? idx[f] : 0;
        double a = seg[i * NL + f], b = seg[(i + 1) * NL + f], c = seg[(i + 2) * NL + f];
        double denom = a - 2.0 * b + c;
        double shift = fabs(denom) > 1e-12 ? 0.5 * (a - c) / denom : 0.0;
        shift = shift < -0.5 ? -0.5 : (shift > 0.5 ? 0.5 : shift);
        rows[f][cfg.c_voicing] = has_peak ? (b < 0.0 ? 0.0 : (b > 1.0 ? 1.0 : b)) : 0.0;
        rows[f][cfg.c_f0] = cfg.sr / ((double)(cfg.lag_min + i) + shift);
    }
}

/* rows(xs, xp, n_frames, logmel_out, lld_out): the per-frame descriptors of features._rows_numpy for the
 * frames starting every hop samples in xs (spectral frames) and xp (pitch frames; features._pitch_input). */
static PyObject *k_rows(PyObject *self, PyObject *args)
{
    PyObject *o[4];
    Py_ssize_t T;
    if (!PyArg_ParseTuple(args, "OOnOO", &o[0], &o[1], &T, &o[2], &o[3])) return NULL;
    if (!cfg.ready) {
        PyErr_SetString(PyExc_RuntimeError, "kernel.rows: configure() first");
        return NULL;
    }
    if (T < 1) {
        PyErr_SetString(PyExc_ValueError, "kernel.rows: no frames");
        return NULL;
    }
    Buf b[4];
    memset(b, 0, sizeof b);
    PyObject *ret = NULL;
    double *work = NULL;
    if (take(o[0], &b[0], 0, 8, (T - 1) * cfg.hop + cfg.nfft_s, "xs") < 0 ||
        take(o[1], &b[1], 0, 8, (T - 1) * cfg.hop + cfg.frame_p, "xp") < 0 ||
        take(o[2], &b[2], 1, 8, T * cfg.n_mels, "logmel_out") < 0 || take(o[3], &b[3], 1, 8, T * cfg.n_lld, "lld") < 0)
        goto done;
    const Py_ssize_t ns = cfg.nfft_s, np_ = cfg.nfft_p, fp = cfg.frame_p, nb = cfg.nb, nq = np_ / 2 + 1;
    const Py_ssize_t L = cfg.lag_max - cfg.lag_min + 3;
    /* interleaved group buffers: spectral frames, pitch frames, pitch power spectra (the DCT-I's M + 1 = nq
     * values), then the spectral power and shape scratch, and one frame's energy squares */
    const Py_ssize_t n_vec = NL * (ns + np_ + nq) + 8;
    const size_t n_work = (size_t)(n_vec + NL * (3 * nb + 2 * cfg.n_mels + cfg.n_mfcc + L) + cfg.core_len);
    work = PyMem_Malloc(sizeof(double) * n_work);
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    double *svec = work + (64 - (uintptr_t)work % 64) % 64 / sizeof(double); /* aligned for the SIMD lanes */
    double *pvec = svec + NL * ns, *hvec = pvec + NL * np_;
    GroupScratch g;
    g.power = work + n_vec;
    g.p = g.power + NL * nb;
    g.lnp = g.p + NL * nb;
    g.lm = g.lnp + NL * nb;
    g.mel = g.lm + NL * cfg.n_mels;
    g.mfcc = g.mel + NL * cfg.n_mels;
    g.seg = g.mfcc + NL * cfg.n_mfcc;
    double *sq = g.seg + NL * L;
    const double *xs = D(b[0]), *xp = D(b[1]);
    double *logmel = D(b[2]), *lld = D(b[3]);
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j0 = 0; j0 < T && !failed; j0 += NL) {
        const Py_ssize_t count = T - j0 < NL ? T - j0 : NL;
        double *rows[NL], *lmo[NL], c1[NL];
        LANES(f) {
            rows[f] = f < count ? lld + (j0 + f) * cfg.n_lld : NULL;
            lmo[f] = f < count ? logmel + (j0 + f) * cfg.n_mels : NULL;
        }
        if (count < NL) /* the last, partial group: the idle lanes transform zeros */
            memset(svec, 0, sizeof(double) * (size_t)(NL * (ns + np_ + nq)));
        for (Py_ssize_t f = 0; f < count; f++) {
            const double *x = xs + (j0 + f) * cfg.hop, *gp = xp + (j0 + f) * cfg.hop;
            for (Py_ssize_t i = 0; i < ns; i++) svec[i * NL + f] = x[i] * cfg.spec_win[i];
            double mean = pairwise_sum(gp, fp, 1) / (double)fp;
            for (Py_ssize_t i = 0; i < fp; i++) {
                double v = gp[i] - mean;
                pvec[i * NL + f] = v * cfg.pitch_win[i];
            }
            for (Py_ssize_t i = fp; i < np_; i++) pvec[i * NL + f] = 0.0;
            energy_zcr(x, sq, rows[f]);
        }
        failed |= ser_rfft_lanes(cfg.plan_s, svec);
        failed |= ser_rfft_lanes(cfg.plan_p, pvec);
        /* pitch: power spectrum -> DCT-I (its even extension's DFT) = autocorrelation times nfft_p */
        halfcomplex_power(pvec, np_, hvec);
        dct1_pre(hvec, c1);
        failed |= ser_rfft_lanes(cfg.plan_h, hvec);
        dct1_post(hvec, c1);
        pick_pitch(hvec, &g, rows);
        halfcomplex_power(svec, ns, g.power);
        spectral(&g, lmo, rows);
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_SetString(PyExc_MemoryError, "kernel.rows: FFT failed");
        goto done;
    }
    ret = Py_NewRef(Py_None);
done:
    release(b, 4);
    PyMem_Free(work);
    return ret;
}

/* ------------------------------------------------------------------ functionals */

static void swap_d(double *a, Py_ssize_t i, Py_ssize_t j)
{
    double t = a[i];
    a[i] = a[j];
    a[j] = t;
}

#define SMALL_RANGE 16 /* ranges this short are insertion-sorted */

/* Quickselect: reorders a[l..r] so that a[k] is its (k - l)-th smallest, nothing larger before it and
 * nothing smaller after it. No NaN allowed. */
static void select_kth(double *a, Py_ssize_t l, Py_ssize_t r, Py_ssize_t k)
{
    while (r > l) {
        if (r - l < SMALL_RANGE) {
            for (Py_ssize_t i = l + 1; i <= r; i++) {
                double v = a[i];
                Py_ssize_t j = i - 1;
                while (j >= l && a[j] > v) {
                    a[j + 1] = a[j];
                    j--;
                }
                a[j + 1] = v;
            }
            return;
        }
        Py_ssize_t m = l + (r - l) / 2;
        if (a[m] < a[l]) swap_d(a, l, m);
        if (a[r] < a[l]) swap_d(a, l, r);
        if (a[r] < a[m]) swap_d(a, m, r);
        double pivot = a[m];
        Py_ssize_t i = l, j = r;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                swap_d(a, i, j);
                i++;
                j--;
            }
        }
        if (k <= j)
            r = j;
        else if (k >= i)
            l = i;
        else
            return; /* a[j+1 .. i-1] all equal the pivot */
    }
}

/* The three quantiles q of a[0..n-1] (n >= 1, reordered) with numpy.percentile's linear
 * interpolation and arithmetic; NaN when a holds a NaN. */
static void quantiles3(double *a, Py_ssize_t n, const double *q, double *out)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (isnan(a[i])) {
            out[0] = out[1] = out[2] = NAN;
            return;
        }
    Py_ssize_t done = -1; /* a[0..done] hold the smallest done+1 values, in order */
    for (int qi = 0; qi < 3; qi++) {
        double virtual_ = (double)(n - 1) * q[qi];
        double lo_f = floor(virtual_);
        Py_ssize_t lo = (Py_ssize_t)lo_f, hi = lo + 1 < n - 1 ? lo + 1 : n - 1;
        for (Py_ssize_t want = lo; want <= hi; want++) {
            if (want <= done) continue;
            if (want == done + 1) { /* the next order statistic: the minimum of the rest */
                Py_ssize_t best = want;
                for (Py_ssize_t i = want + 1; i < n; i++)
                    if (a[i] < a[best]) best = i;
                swap_d(a, want, best);
            } else {
                select_kth(a, done + 1, n - 1, want);
            }
            done = want;
        }
        double gamma = virtual_ - lo_f, va = a[lo], vb = a[hi], diff = vb - va;
        out[qi] = gamma >= 0.5 ? vb - diff * (1.0 - gamma) : va + diff * gamma;
    }
}

/* mean and std of a 1-D array, numpy-style (pairwise sums); tmp holds n doubles. */
static void mean_std_1d(const double *x, Py_ssize_t n, double *tmp, double *mean, double *std)
{
    double m = pairwise_sum(x, n, 1) / (double)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        double d = x[i] - m;
        tmp[i] = d * d;
    }
    *mean = m;
    *std = sqrt(pairwise_sum(tmp, n, 1) / (double)n);
}

static int emit(float *out, Py_ssize_t *pos, Py_ssize_t cap, double v)
{
    if (*pos >= cap) return -1;
    float f = (float)v;
    out[(*pos)++] = isfinite(f) ? f : 0.0f;
    return 0;
}

/* functionals' matrix scratch: grown as needed, kept (functionals runs with the GIL held, so one at a time) */
static double *matrix = NULL;
static size_t matrix_cap = 0;

#define N_FRAMEWISE_SPECTRAL 11 /* energy_rel, 5 shape, flux, 3 shape, zcr: features.SPECTRAL_LLDS */

/* functionals(lld, logmel, active, voiced, n_lld, cols, level, dct_colsum, delta_w, quantiles,
 *             hop_s, f0_ref, out)
 * cols = (col_mfcc, col_shape, col_energy, col_zcr, col_voicing, col_f0); active and voiced are bool
 * arrays (one byte per frame). Writes the N_FEATURES float32 values of features.functionals (non-finite
 * values as 0), in the same order. */
static PyObject *k_functionals(PyObject *self, PyObject *args)
{
    PyObject *o[8];
    Py_ssize_t n_lld, cm, cs, ce, cz, cv, cf;
    Py_ssize_t hop, sr;
    double level, f0_ref;
    if (!PyArg_ParseTuple(args, "OOOOn(nnnnnn)dOOOnndO", &o[0], &o[1], &o[2], &o[3], &n_lld, &cm, &cs, &ce, &cz, &cv,
                          &cf, &level, &o[4], &o[5], &o[6], &hop, &sr, &f0_ref, &o[7]))
        return NULL;
    if (hop < 1 || sr < 1) {
        PyErr_SetString(PyExc_ValueError, "kernel.functionals: bad hop or sample rate");
        return NULL;
    }
    const double hop_s = (double)hop / (double)sr;
    Buf b[8];
    memset(b, 0, sizeof b);
    PyObject *ret = NULL;
    double *work = NULL;
    if (take(o[0], &b[0], 0, 8, n_lld, "lld") < 0 || take(o[4], &b[4], 0, 8, 1, "dct_colsum") < 0 ||
        take(o[5], &b[5], 0, 8, 1, "delta_w") < 0 || take(o[6], &b[6], 0, 8, 3, "quantiles") < 0 ||
        take(o[7], &b[7], 1, 4, 1, "out") < 0)
        goto done;
    Py_ssize_t T = NITEMS(b[0], 8) / n_lld, n_mfcc = NITEMS(b[4], 8), n_dw = NITEMS(b[5], 8);
    if (take(o[1], &b[1], 0, 8, T, "logmel") < 0 || take(o[2], &b[2], 0, 1, T, "active") < 0 ||
        take(o[3], &b[3], 0, 1, T, "voiced") < 0)
        goto done;
    Py_ssize_t n_mels = NITEMS(b[1], 8) / T;
    Py_ssize_t cols[6] = {cm, cs, ce, cz, cv, cf};
    for (int i = 0; i < 6; i++)
        if (cols[i] < 0 || cols[i] >= n_lld) {
            PyErr_SetString(PyExc_ValueError, "kernel.functionals: bad column");
            goto done;
        }
    if (cm + n_mfcc > n_lld || cs + N_SHAPE > n_lld || n_dw % 2 != 1) {
        PyErr_SetString(PyExc_ValueError, "kernel.functionals: bad sizes");
        goto done;
    }
    const double *lld = D(b[0]), *logmel = D(b[1]), *colsum = D(b[4]), *dw = D(b[5]), *q = D(b[6]);
    const unsigned char *active = (const unsigned char *)b[2].view.buf, *voiced = (const unsigned char *)b[3].view.buf;
    float *out = (float *)b[7].view.buf;
    Py_ssize_t cap = NITEMS(b[7], 4), pos = 0;

    /* scratch: one column, flux, deltas of one coefficient, 1-D temporaries (one also holds a frame's bands) */
    const Py_ssize_t len = T > n_mels ? T : n_mels;
    work = PyMem_Malloc(sizeof(double) * (size_t)(5 * len));
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t *idx = (Py_ssize_t *)PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)T);
    if (idx == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    double *col = work, *flux = work + len, *tmp = work + 2 * len, *tmp2 = work + 3 * len, *tmp3 = work + 4 * len;
    Py_ssize_t n = 0, n_active = 0, n_voiced = 0;
    for (Py_ssize_t t = 0; t < T; t++) {
        if (active[t]) idx[n++] = t;
        n_voiced += voiced[t] != 0;
    }
    n_active = n;
    if (n < 2) {
        n = T;
        for (Py_ssize_t t = 0; t < T; t++) idx[t] = t;
    }
    flux[0] = 0.0;
    for (Py_ssize_t t = 1; t < T; t++) {
        for (Py_ssize_t m = 0; m < n_mels; m++) tmp[m] = fabs(logmel[t * n_mels + m] - logmel[(t - 1) * n_mels + m]);
        flux[t] = pairwise_sum(tmp, n_mels, 1) / (double)n_mels;
    }
#define EMIT(v)                                                 \
    if (emit(out, &pos, cap, (v)) < 0) goto overflow;
    /* The window's matrix of frame-wise values, selected frames only (features._functionals_numpy's m):
     * MFCC of the level-corrected log-mel, SPECTRAL_LLDS, MFCC deltas, log-mel. Row-major, so that the
     * column sums run row by row as numpy's axis-0 reductions do, all columns at once. */
    const Py_ssize_t n_fw = n_mfcc + N_FRAMEWISE_SPECTRAL, W = n_fw + n_mfcc + n_mels;
    const size_t need = (size_t)(n * W + T * n_mfcc + 5 * W);
    if (need > matrix_cap) { /* grows, never shrinks: no allocation (and no page faults) per window */
        double *grown = PyMem_Realloc(matrix, sizeof(double) * need);
        if (grown == NULL) {
            PyErr_NoMemory();
            goto done_idx;
        }
        matrix = grown;
        matrix_cap = need;
    }
    double *M = matrix, *delta = M + n * W, *sum = delta + T * n_mfcc, *mean = sum + W, *ss = mean + W,
           *dabs = ss + W, *shift = dabs + W;
    for (Py_ssize_t c = 0; c < n_mfcc; c++) shift[c] = level * colsum[c];
    /* deltas over every frame, edges repeated, terms added in the weights' order */
    Py_ssize_t half = n_dw / 2;
    memset(delta, 0, sizeof(double) * (size_t)(T * n_mfcc));
    for (Py_ssize_t t = 0; t < T; t++)
        for (Py_ssize_t k = 0; k < n_dw; k++) {
            if (dw[k] == 0.0) continue;
            Py_ssize_t src = t + k - half;
            src = src < 0 ? 0 : (src > T - 1 ? T - 1 : src);
            const double *from = lld + src * n_lld + cm;
            double *to = delta + t * n_mfcc;
            for (Py_ssize_t c = 0; c < n_mfcc; c++) to[c] += dw[k] * from[c];
        }
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_ssize_t t = idx[i];
        const double *L = lld + t * n_lld;
        double *r = M + i * W;
        for (Py_ssize_t c = 0; c < n_mfcc; c++) r[c] = L[cm + c] - shift[c];
        double *sp = r + n_mfcc; /* SPECTRAL_LLDS: energy_rel, 5 shape, flux, 3 shape, zcr */
        sp[0] = L[ce] - level;
        for (int k = 0; k < 5; k++) sp[1 + k] = L[cs + k];
        sp[6] = flux[t];
        for (int k = 5; k < N_SHAPE; k++) sp[2 + k] = L[cs + k];
        sp[10] = L[cz];
        memcpy(r + n_fw, delta + t * n_mfcc, sizeof(double) * (size_t)n_mfcc);
        memcpy(r + n_fw + n_mfcc, logmel + t * n_mels, sizeof(double) * (size_t)n_mels);
    }
    memset(sum, 0, sizeof(double) * (size_t)W);
    memset(ss, 0, sizeof(double) * (size_t)W);
    memset(dabs, 0, sizeof(double) * (size_t)W);
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t c = 0; c < W; c++) sum[c] += M[i * W + c];
    for (Py_ssize_t c = 0; c < W; c++) mean[c] = sum[c] / (double)n;
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t c = 0; c < W; c++) {
            double d = M[i * W + c] - mean[c];
            ss[c] += d * d;
        }
    for (Py_ssize_t i = 1; i < n; i++)
        for (Py_ssize_t c = 0; c < n_fw; c++) dabs[c] += fabs(M[i * W + c] - M[(i - 1) * W + c]);
    double pct[3];
#define STD(c) sqrt(ss[c] / (double)n)
#define DABS(c) (n > 1 ? dabs[c] / (double)(n - 1) : 0.0)
#define QUANTILES(c)                                            \
    for (Py_ssize_t i = 0; i < n; i++) col[i] = M[i * W + (c)]; \
    quantiles3(col, n, q, pct);
    /* MFCC: mean, std, p10, p50, p90, dabs */
    for (Py_ssize_t c = 0; c < n_mfcc; c++) {
        QUANTILES(c);
        EMIT(mean[c]);
        EMIT(STD(c));
        for (int k = 0; k < 3; k++) EMIT(pct[k]);
        EMIT(DABS(c));
    }
    for (Py_ssize_t c = 0; c < n_mfcc; c++) EMIT(STD(n_fw + c)); /* deltas: std */
    for (Py_ssize_t m = 0; m < n_mels; m++) { /* log-mel: mean (level-corrected), std */
        EMIT(mean[n_fw + n_mfcc + m] - level);
        EMIT(STD(n_fw + n_mfcc + m));
    }
    for (Py_ssize_t c = n_mfcc; c < n_fw; c++) { /* spectral LLDs; the relative energy has no mean */
        QUANTILES(c);
        if (c > n_mfcc) EMIT(mean[c]);
        EMIT(STD(c));
        for (int k = 0; k < 3; k++) EMIT(pct[k]);
        EMIT(DABS(c));
    }
#undef STD
#undef DABS
#undef QUANTILES
    /* pitch over voiced frames */
    Py_ssize_t nv = 0;
    for (Py_ssize_t t = 0; t < T; t++)
        if (voiced[t]) {
            tmp[nv] = 12.0 * log2(lld[t * n_lld + cf] / f0_ref);
            tmp2[nv] = (double)t * hop_s;
            nv++;
        }
    if (nv < 2) {
        for (int k = 0; k < 8; k++) EMIT(0.0);
    } else {
        double st_mean, st_std, t_mean, pct[3], num = 0.0, den = 0.0;
        mean_std_1d(tmp, nv, tmp3, &st_mean, &st_std);
        t_mean = pairwise_sum(tmp2, nv, 1) / (double)nv;
        for (Py_ssize_t i = 0; i < nv; i++) {
            double tc = tmp2[i] - t_mean;
            num += tc * (tmp[i] - st_mean);
            den += tc * tc;
        }
        double slope = num / (den > 1e-12 ? den : 1e-12);
        Py_ssize_t nb = 0;
        for (Py_ssize_t t = 0; t + 1 < T; t++)
            if (voiced[t] && voiced[t + 1]) {
                double f1 = lld[t * n_lld + cf], f2 = lld[(t + 1) * n_lld + cf];
                tmp3[nb++] = fabs(12.0 * log2((f2 > 1.0 ? f2 : 1.0) / f0_ref) - 12.0 * log2((f1 > 1.0 ? f1 : 1.0) / f0_ref));
            }
        double dabs = nb ? pairwise_sum(tmp3, nb, 1) / (double)nb : 0.0;
        memcpy(tmp2, tmp, sizeof(double) * (size_t)nv);
        quantiles3(tmp2, nv, q, pct);
        EMIT(st_mean);
        EMIT(st_std);
        EMIT(pct[0]);
        EMIT(pct[1]);
        EMIT(pct[2]);
        EMIT(pct[2] - pct[0]);
        EMIT(slope);
        EMIT(dabs);
    }
    /* voice quality and rhythm */
    if (n_active == 0) {
        for (int k = 0; k < 6; k++) EMIT(0.0);
    } else {
        Py_ssize_t na = 0, onsets = voiced[0] != 0;
        for (Py_ssize_t t = 0; t < T; t++) {
            if (active[t]) tmp[na++] = lld[t * n_lld + cv];
            if (t > 0 && voiced[t] && !voiced[t - 1]) onsets++;
        }
        double strength = pairwise_sum(tmp, na, 1) / (double)na, hnr_mean = 0.0, hnr_std = 0.0;
        if (n_voiced) {
            Py_ssize_t k = 0;
            for (Py_ssize_t t = 0; t < T; t++)
                if (voiced[t]) {
                    double r = lld[t * n_lld + cv];
                    r = r < 1e-3 ? 1e-3 : (r > 0.999 ? 0.999 : r);
                    tmp[k++] = 10.0 * log10(r / (1.0 - r));
                }
            mean_std_1d(tmp, k, tmp3, &hnr_mean, &hnr_std);
        }
        double active_s = (double)(n_active * hop) / (double)sr;
        double voiced_s = (double)(n_voiced * hop) / (double)sr;
        EMIT((double)n_voiced / (double)n_active);
        EMIT(strength);
        EMIT(hnr_mean);
        EMIT(hnr_std);
        EMIT((double)onsets / active_s);
        EMIT(onsets ? voiced_s / (double)onsets : 0.0);
    }
    if (pos != cap) {
        PyErr_Format(PyExc_ValueError, "kernel.functionals: wrote %zd values into %zd", pos, cap);
        goto done_idx;
    }
    ret = Py_NewRef(Py_None);
    goto done_idx;
overflow:
    PyErr_Format(PyExc_ValueError, "kernel.functionals: more values than the %zd of out", cap);
done_idx:
    PyMem_Free(idx);
done:
    release(b, 8);
    PyMem_Free(work);
    return ret;
#undef EMIT
}

/* same(a, b): whether two C-contiguous buffers hold the same bytes (FrameCache's overlap check). */
static PyObject *k_same(PyObject *self, PyObject *args)
{
    PyObject *oa, *ob;
    if (!PyArg_ParseTuple(args, "OO", &oa, &ob)) return NULL;
    Buf b[2];
    memset(b, 0, sizeof b);
    PyObject *ret = NULL;
    if (take(oa, &b[0], 0, 1, 0, "a") == 0 && take(ob, &b[1], 0, 1, 0, "b") == 0)
        ret = PyBool_FromLong(b[0].view.len == b[1].view.len &&
                              memcmp(b[0].view.buf, b[1].view.buf, (size_t)b[0].view.len) == 0);
    release(b, 2);
    return ret;
}

/* cpu_has_avx2(): whether this CPU and OS run AVX2 code (the _kernel_avx2 module). */
static PyObject *k_cpu_has_avx2(PyObject *self, PyObject *args)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return PyBool_FromLong(__builtin_cpu_supports("avx2"));
#else
    Py_RETURN_FALSE;
#endif
}

static PyObject *k_lanes(PyObject *self, PyObject *args) { return PyLong_FromSize_t(ser_fft_lanes()); }

static PyMethodDef methods[] = {
    {"cpu_has_avx2", k_cpu_has_avx2, METH_NOARGS, "whether the CPU runs AVX2 code"},
    {"lanes", k_lanes, METH_NOARGS, "frames per FFT call (SIMD lanes)"},
    {"same", k_same, METH_VARARGS, "whether two contiguous buffers hold the same bytes"},
    {"configure", k_configure, METH_VARARGS, "the analysis constants of features.py (see _kernel.c)"},
    {"rows", k_rows, METH_VARARGS, "per-frame descriptors of a block of frames (see _kernel.c)"},
    {"functionals", k_functionals, METH_VARARGS, "the window's feature vector (see _kernel.c)"},
    {NULL, NULL, 0, NULL},
};

/* The same source builds two modules (setup.py): _kernel for any CPU, and on x86-64 _kernel_avx2 with
 * 256-bit vectors (four frames per FFT instead of two), which features.py prefers where the CPU has AVX2.
 * No FMA in either: the values are the same bits. */
#ifndef SER_MODULE
#define SER_MODULE _kernel
#endif
#define SER_STR2(x) #x
#define SER_STR(x) SER_STR2(x)
#define SER_CAT2(a, b) a##b
#define SER_CAT(a, b) SER_CAT2(a, b)

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, SER_STR(SER_MODULE), "Compiled loops of realtime_ser.features", -1, methods, NULL, NULL, NULL,
    NULL,
};

PyMODINIT_FUNC SER_CAT(PyInit_, SER_MODULE)(void) { return PyModule_Create(&module); }
