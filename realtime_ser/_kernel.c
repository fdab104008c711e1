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

/* ------------------------------------------------------------------ configuration */

/* Real FFT in place, half-complex output (_fft.cpp). */
void *ser_fft_plan(size_t n);
void ser_fft_free(void *plan);
int ser_rfft(void *plan, double *data);
int ser_rfft2(void *plan, double *a, double *b, double *vbuf);

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
              c.core_start < 0 || c.core_len < 2 || c.core_start + c.core_len > c.nfft_s || c.n_mels < 2 ||
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
    c.plan_s = ser_fft_plan((size_t)c.nfft_s);
    c.plan_p = ser_fft_plan((size_t)c.nfft_p);
    c.plan_h = ser_fft_plan((size_t)half);
    if (!c.plan_s || !c.plan_p || !c.plan_h) {
        PyErr_SetString(PyExc_MemoryError, "kernel.configure: no FFT plan");
        goto fail;
    }
    c.sr = c.sr;
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

/* Power spectrum (n/2 + 1 bins) of a half-complex FFT output of even length n. */
static void halfcomplex_power(const double *h, Py_ssize_t n, double *power)
{
    power[0] = h[0] * h[0] + 0.0;
    for (Py_ssize_t k = 1; k < n / 2; k++) power[k] = h[2 * k - 1] * h[2 * k - 1] + h[2 * k] * h[2 * k];
    power[n / 2] = h[n - 1] * h[n - 1] + 0.0;
}

/* DCT-I of x[0 .. M] in place, M = nfft_p / 2: y[k] = x[0] + (-1)^k x[M] + 2 sum_{0<j<M} x[j] cos(pi j k / M),
 * i.e. the real DFT of the even extension of x (length 2M), from one real FFT of M points (FFTPACK's
 * cost routine): dct1_pre, the FFT of x[0 .. M-1] in place, dct1_post. */
static double dct1_pre(double *x)
{
    const Py_ssize_t M = cfg.nfft_p / 2;
    double c1 = x[0] - x[M];
    x[0] = x[0] + x[M];
    for (Py_ssize_t j = 1; j < M / 2; j++) {
        Py_ssize_t jc = M - j;
        double t1 = x[j] + x[jc], t2 = x[j] - x[jc];
        c1 += cfg.dct1_cos[j] * t2;
        t2 = cfg.dct1_sin[j] * t2;
        x[j] = t1 - t2;
        x[jc] = t1 + t2;
    }
    x[M / 2] = x[M / 2] + x[M / 2];
    return c1;
}

static void dct1_post(double *x, double c1)
{
    const Py_ssize_t M = cfg.nfft_p / 2;
    double xim2 = x[1];
    x[1] = c1;
    for (Py_ssize_t i = 3; i < M; i += 2) {
        double xi = x[i];
        x[i] = x[i - 2] - x[i - 1];
        x[i - 1] = xim2;
        xim2 = xi;
    }
    x[M] = xim2;
}

/* Real FFT in place of one frame (b == NULL) or two. */
static int fft_frames(void *plan, double *a, double *b, double *vbuf)
{
    return b == NULL ? ser_rfft(plan, a) : ser_rfft2(plan, a, b, vbuf);
}

/* Energy and zero-crossing rate of the spectral frame's core (samples f[core_start ...]). */
static void energy_zcr(const double *f, double *sq, double *row)
{
    const double *core = f + cfg.core_start;
    Py_ssize_t n = cfg.core_len, changes = 0;
    for (Py_ssize_t i = 0; i < n; i++) sq[i] = core[i] * core[i];
    double ms = pairwise_sum(sq, n, 1) / (double)n;
    double e = ms > 0 ? 10.0 * log10(ms > 1e-30 ? ms : 1e-30) : cfg.energy_floor;
    row[cfg.c_energy] = e > cfg.energy_floor ? e : cfg.energy_floor;
    for (Py_ssize_t i = 1; i < n; i++) changes += (signbit(core[i]) != 0) != (signbit(core[i - 1]) != 0);
    row[cfg.c_zcr] = (double)changes / (double)(n - 1);
}

/* Log-mel, MFCC and spectral shape of one frame's power spectrum. */
static void spectral(const double *power, double *p, double *lnp, double *lm, double *row)
{
    const Py_ssize_t nb = cfg.nb, n_mels = cfg.n_mels, n_mfcc = cfg.n_mfcc;
    for (Py_ssize_t m = 0; m < n_mels; m++) {
        const double *w = cfg.melfb + m * nb;
        double acc = 0.0;
        for (int64_t k = cfg.mel_lo[m]; k < cfg.mel_hi[m]; k++) acc += power[k] * w[k];
        lm[m] = 10.0 * log10(acc > cfg.amin ? acc : cfg.amin);
    }
    double *mfcc = row + cfg.c_mfcc;
    for (Py_ssize_t c = 0; c < n_mfcc; c++) mfcc[c] = 0.0;
    for (Py_ssize_t m = 0; m < n_mels; m++) /* each coefficient summed over bands in order, all at once */
        for (Py_ssize_t c = 0; c < n_mfcc; c++) mfcc[c] += lm[m] * cfg.dct[m * n_mfcc + c];
    /* shape; the normalised spectrum p / total is never stored: sums of p are scaled instead */
    for (Py_ssize_t k = 0; k < nb; k++) p[k] = power[k] + cfg.eps;
    double total = pairwise_sum(p, nb, 1), inv_total = 1.0 / total;
    double s1 = 0.0, s2 = 0.0, cross = 0.0, cum = 0.0;
    for (Py_ssize_t k = 0; k < nb; k++) lnp[k] = log_pos(p[k]); /* a loop of its own: it vectorises */
    for (Py_ssize_t k = 0; k < nb; k++)
        if (!(p[k] >= DBL_MIN && p[k] <= DBL_MAX)) lnp[k] = log(p[k]); /* inf or nan from huge samples */
    for (Py_ssize_t k = 0; k < nb; k++) {
        s1 += p[k] * cfg.freqs[k];
        s2 += p[k] * cfg.freqs_sq[k];
        cross += p[k] * lnp[k];
    }
    double centroid = s1 * inv_total, var = s2 * inv_total - centroid * centroid;
    Py_ssize_t roll = 0;
    for (Py_ssize_t k = 0; k < nb; k++) {
        cum += p[k] * inv_total;
        if (cum >= 0.85) {
            roll = k;
            break;
        }
    }
    double flatness = 10.0 * (pairwise_sum(lnp, nb, 1) / (double)nb / log(10.0) - log10(total / (double)nb));
    double entropy = (log(total) - cross * inv_total) / log((double)nb);
    double lm_mean = pairwise_sum(lm, n_mels, 1) / (double)n_mels, slope = 0.0;
    for (Py_ssize_t m = 0; m < n_mels; m++) slope += (lm[m] - lm_mean) * cfg.slope_w[m];
    const Py_ssize_t *bd = cfg.bands;
    double lo_band = pairwise_sum(p + bd[0], bd[1] - bd[0], 1), hi_band = pairwise_sum(p + bd[2], bd[3] - bd[2], 1);
    double peak_lo = p[bd[4]], peak_hi = p[bd[6]];
    for (Py_ssize_t k = bd[4]; k < bd[5]; k++) peak_lo = p[k] > peak_lo ? p[k] : peak_lo;
    for (Py_ssize_t k = bd[6]; k < bd[7]; k++) peak_hi = p[k] > peak_hi ? p[k] : peak_hi;
    double *sh = row + cfg.c_shape;
    sh[0] = centroid;
    sh[1] = sqrt(var > 0.0 ? var : 0.0);
    sh[2] = cfg.freqs[roll];
    sh[3] = flatness;
    sh[4] = entropy;
    sh[5] = slope;
    sh[6] = 10.0 * log10(lo_band / hi_band);
    sh[7] = 10.0 * log10(peak_lo / peak_hi);
}

/* Voicing strength and F0 from a window-corrected normalised autocorrelation acf[0 .. lag_max + 1]
 * (features._pitch's peak picking). seg is scratch of lag_max - lag_min + 3 doubles. */
static void pick_pitch(const double *acf, double *seg, double *row)
{
    const Py_ssize_t L = cfg.lag_max - cfg.lag_min + 3;
    double scale = 1.0 / (acf[0] > 1e-20 ? acf[0] : 1e-20);
    for (Py_ssize_t i = 0; i < L; i++) {
        Py_ssize_t lag = cfg.lag_min - 1 + i;
        seg[i] = acf[lag] * scale * cfg.inv_win_acf[lag];
    }
    double best = -INFINITY;
    for (Py_ssize_t i = 1; i < L - 1; i++)
        if (seg[i] > seg[i - 1] && seg[i] >= seg[i + 1] && seg[i] > best) best = seg[i];
    double bar = cfg.octave_tol * best;
    Py_ssize_t idx = 0;
    int has_peak = 0;
    for (Py_ssize_t i = 1; i < L - 1; i++)
        if (seg[i] > seg[i - 1] && seg[i] >= seg[i + 1] && seg[i] >= bar) {
            idx = i - 1;
            has_peak = 1;
            break;
        }
    double a = seg[idx], b = seg[idx + 1], c = seg[idx + 2];
    double denom = a - 2.0 * b + c;
    double shift = fabs(denom) > 1e-12 ? 0.5 * (a - c) / denom : 0.0;
    shift = shift < -0.5 ? -0.5 : (shift > 0.5 ? 0.5 : shift);
    row[cfg.c_voicing] = has_peak ? (b < 0.0 ? 0.0 : (b > 1.0 ? 1.0 : b)) : 0.0;
    row[cfg.c_f0] = cfg.sr / ((double)(cfg.lag_min + idx) + shift);
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
    /* per frame of a pair: spectral frame, pitch frame, pitch power spectrum; shared: the rest */
    const Py_ssize_t per_frame = ns + np_ + nq, vlen = 2 * np_ + 2;
    const size_t n_work = (size_t)(2 * per_frame + vlen + 3 * nb + cfg.core_len + (cfg.lag_max - cfg.lag_min + 3));
    work = PyMem_Malloc(sizeof(double) * n_work);
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    double *sbuf[2], *pbuf[2], *ppow[2];
    for (int f = 0; f < 2; f++) {
        sbuf[f] = work + f * per_frame;
        pbuf[f] = sbuf[f] + ns;
        ppow[f] = pbuf[f] + np_;
    }
    double *vbuf = work + 2 * per_frame;
    vbuf += ((uintptr_t)vbuf % 16) / sizeof(double); /* 16-byte aligned for the SIMD lanes */
    double *power = work + 2 * per_frame + vlen, *p = power + nb, *lnp = p + nb, *sq = lnp + nb,
           *seg = sq + cfg.core_len;
    const double *xs = D(b[0]), *xp = D(b[1]);
    double *logmel = D(b[2]), *lld = D(b[3]);
    const double inv_n = 1.0 / (double)np_;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j0 = 0; j0 < T && !failed; j0 += 2) {
        const int count = T - j0 >= 2 ? 2 : 1; /* frames analysed together: the FFTs run two at a time */
        double c1[2];
        for (int f = 0; f < count; f++) {
            const double *x = xs + (j0 + f) * cfg.hop, *g = xp + (j0 + f) * cfg.hop;
            for (Py_ssize_t i = 0; i < ns; i++) sbuf[f][i] = x[i] * cfg.spec_win[i];
            double mean = pairwise_sum(g, fp, 1) / (double)fp;
            for (Py_ssize_t i = 0; i < fp; i++) {
                pbuf[f][i] = g[i] - mean;
                pbuf[f][i] *= cfg.pitch_win[i];
            }
            memset(pbuf[f] + fp, 0, sizeof(double) * (size_t)(np_ - fp));
        }
        failed |= fft_frames(cfg.plan_s, sbuf[0], count == 2 ? sbuf[1] : NULL, vbuf);
        failed |= fft_frames(cfg.plan_p, pbuf[0], count == 2 ? pbuf[1] : NULL, vbuf);
        /* pitch: power spectrum -> DCT-I (its even extension's DFT) = autocorrelation times nfft_p */
        for (int f = 0; f < count; f++) {
            halfcomplex_power(pbuf[f], np_, ppow[f]);
            c1[f] = dct1_pre(ppow[f]);
        }
        failed |= fft_frames(cfg.plan_h, ppow[0], count == 2 ? ppow[1] : NULL, vbuf);
        for (int f = 0; f < count; f++) {
            Py_ssize_t j = j0 + f;
            double *row = lld + j * cfg.n_lld;
            dct1_post(ppow[f], c1[f]);
            for (Py_ssize_t k = 0; k < cfg.lag_max + 2; k++) pbuf[f][k] = ppow[f][k] * inv_n;
            pick_pitch(pbuf[f], seg, row);
            halfcomplex_power(sbuf[f], ns, power);
            spectral(power, p, lnp, logmel + j * cfg.n_mels, row);
            energy_zcr(xs + j * cfg.hop, sq, row);
        }
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

/* mean, std, 3 quantiles, mean |change| of col[0..n-1] (col is reordered; n >= 1). Column sums run
 * in row order, as numpy's axis-0 reductions do. */
static void column_stats(double *col, Py_ssize_t n, const double *q, int order_stats, double *out)
{
    double s = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) s += col[i];
    double mean = s / (double)n, ss = 0.0, dabs = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double d = col[i] - mean;
        ss += d * d;
    }
    for (Py_ssize_t i = 1; i < n; i++) dabs += fabs(col[i] - col[i - 1]);
    out[0] = mean;
    out[1] = sqrt(ss / (double)n);
    out[5] = n > 1 ? dabs / (double)(n - 1) : 0.0;
    if (order_stats) quantiles3(col, n, q, out + 2);
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
    work = PyMem_Malloc(sizeof(double) * (size_t)(6 * len));
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t *idx = (Py_ssize_t *)PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)T);
    if (idx == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    double *col = work, *flux = work + len, *delta = work + 2 * len, *tmp = work + 3 * len, *tmp2 = work + 4 * len,
           *tmp3 = work + 5 * len;
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
    double st[6];
#define GATHER(expr)                                            \
    for (Py_ssize_t i = 0; i < n; i++) {                        \
        Py_ssize_t t = idx[i];                                  \
        col[i] = (expr);                                        \
    }
#define EMIT(v)                                                 \
    if (emit(out, &pos, cap, (v)) < 0) goto overflow;
    /* MFCC of the level-corrected log-mel: mean, std, p10, p50, p90, dabs */
    for (Py_ssize_t c = 0; c < n_mfcc; c++) {
        double shift = level * colsum[c];
        GATHER(lld[t * n_lld + cm + c] - shift);
        column_stats(col, n, q, 1, st);
        for (int k = 0; k < 6; k++) EMIT(st[k]);
    }
    /* MFCC deltas (over every frame, edges repeated): std */
    Py_ssize_t half = n_dw / 2;
    for (Py_ssize_t c = 0; c < n_mfcc; c++) {
        for (Py_ssize_t t = 0; t < T; t++) {
            double acc = 0.0;
            for (Py_ssize_t k = 0; k < n_dw; k++) {
                if (dw[k] == 0.0) continue;
                Py_ssize_t s = t + k - half;
                s = s < 0 ? 0 : (s > T - 1 ? T - 1 : s);
                acc += dw[k] * lld[s * n_lld + cm + c];
            }
            delta[t] = acc;
        }
        GATHER(delta[t]);
        column_stats(col, n, q, 0, st);
        EMIT(st[1]);
    }
    /* log-mel bands: mean (level-corrected) and std */
    for (Py_ssize_t m = 0; m < n_mels; m++) {
        GATHER(logmel[t * n_mels + m]);
        column_stats(col, n, q, 0, st);
        EMIT(st[0] - level);
        EMIT(st[1]);
    }
    /* spectral LLDs in features.SPECTRAL_LLDS order; the relative energy has no mean */
    for (int s = 0; s < N_FRAMEWISE_SPECTRAL; s++) {
        if (s == 0) {
            GATHER(lld[t * n_lld + ce] - level);
        } else if (s <= 5) {
            GATHER(lld[t * n_lld + cs + (s - 1)]);
        } else if (s == 6) {
            GATHER(flux[t]);
        } else if (s <= 9) {
            GATHER(lld[t * n_lld + cs + (s - 2)]);
        } else {
            GATHER(lld[t * n_lld + cz]);
        }
        column_stats(col, n, q, 1, st);
        for (int k = s == 0 ? 1 : 0; k < 6; k++) EMIT(st[k]);
    }
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
#undef GATHER
#undef EMIT
}

static PyMethodDef methods[] = {
    {"configure", k_configure, METH_VARARGS, "the analysis constants of features.py (see _kernel.c)"},
    {"rows", k_rows, METH_VARARGS, "per-frame descriptors of a block of frames (see _kernel.c)"},
    {"functionals", k_functionals, METH_VARARGS, "the window's feature vector (see _kernel.c)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernel", "Compiled loops of realtime_ser.features", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
