/* The perturbed k-th largest value on CPU, fused: noise, perturbation and
 * selection in one pass over each row, with no score-sized buffer.
 *
 * Compiled at first use by sktopk/_cpu_kernel.py (see its docstring); called
 * through ctypes on contiguous float32 or float64 rows.
 *
 * Noise. Z[n, b, j] is a function of (seed, row n, draw b, column j) only:
 * Philox4x32-10 (Salmon et al., SC 2011) at counter (j / 4, b, n_low, n_high)
 * gives four 32-bit words, and a Box-Muller transform of each pair of words
 * gives the normals of columns 4g, 4g+1 (words 0, 1) and 4g+2, 4g+3 (words 2,
 * 3). So the value of a draw does not depend on the order in which columns are
 * visited, on which columns are skipped, or on how rows are split across
 * threads. Uniforms have 24 bits, as torch's own float generator: |Z| <= ZMAX.
 *
 * Skipping, exact. Because |Z| <= ZMAX, a column with x_j + eps * ZMAX below
 * the current k-th largest perturbed value can never enter the top k. Per row,
 * columns are visited by groups of four (one Philox counter), the groups sorted
 * into levels by their highest score; a draw stops at the first level whose
 * bound cannot reach its running k-th value, and groups that no draw can use
 * (maximum + eps ZMAX below L - eps ZMAX after rounding, L the row's k-th
 * largest score) are dropped once per row. The result is identical to visiting
 * every column (ties between equal perturbed values are broken towards the
 * lower column index in both cases).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#ifndef SKTOPK_TYPED_PART

#if defined(SKTOPK_VECTOR_MATH) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* glibc's libmvec has vector versions of these; declaring them lets gcc call
 * them from vectorised loops without -ffast-math (whose crtfastmath would set
 * flush-to-zero for the whole process). */
__attribute__((__simd__("notinbranch"))) float logf(float);
__attribute__((__simd__("notinbranch"))) float cosf(float);
__attribute__((__simd__("notinbranch"))) float expf(float);
__attribute__((__simd__("notinbranch"))) double log(double);
#endif
/* The proposals' gaps take their logarithms eight at a time (a vector call with
 * libmvec). Every build batches alike, so that a seed draws the same numbers with
 * or without libmvec and AVX2. */
#define GAP_BATCH 8

#ifndef LANES
#define LANES 32 /* Philox counters (groups of four columns) per block */
#endif
#define LEVELS 32           /* score levels of a row's groups */
#define MAX_K 64            /* longer top lists go to the torch path */
#define NON_FINITE (-2) /* returned when a row holds NaN or an infinity */
/* Largest |Z|: sqrt(-2 log(2^-25)) = 5.887 for the smallest 24-bit uniform, rounded up. */
#define ZMAX 5.9f

/* Philox4x32-10: the ten rounds on the counter x, in place, under the key (k0, k1). */
static inline void philox10(uint32_t x[4], uint32_t k0, uint32_t k1) {
#pragma GCC unroll 10
    for (int r = 0; r < 10; r++) {
        const uint64_t p0 = (uint64_t)0xD2511F53u * x[0];
        const uint64_t p1 = (uint64_t)0xCD9E8D57u * x[2];
        const uint32_t y0 = (uint32_t)(p1 >> 32) ^ x[1] ^ k0;
        const uint32_t y2 = (uint32_t)(p0 >> 32) ^ x[3] ^ k1;
        x[1] = (uint32_t)p1;
        x[3] = (uint32_t)p0;
        x[0] = y0;
        x[2] = y2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

#ifdef __AVX2__
/* The high and low 32 bits of the eight products a[i] * b (as 64-bit integers). */
static inline void mul_wide8(__m256i a, __m256i b, __m256i *hi, __m256i *lo) {
    const __m256i even = _mm256_mul_epu32(a, b); /* lanes 0, 2, ...: whole products */
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), b);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}
#endif

static void philox_block(uint64_t seed, const uint32_t *restrict group, uint32_t draw,
                         uint64_t row, int lanes, uint32_t out[4][LANES]) {
    int i = 0;
#ifdef __AVX2__
    /* Eight counters per vector, written out: gcc's own vectorisation of the loop
     * below reloaded the round keys from mask registers in every round. (256-bit
     * vectors: 512-bit multiplies lower the clock of some CPUs.) */
    const __m256i m0 = _mm256_set1_epi32((int)0xD2511F53u);
    const __m256i m1 = _mm256_set1_epi32((int)0xCD9E8D57u);
    for (; i + 8 <= lanes; i += 8) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(group + i));
        __m256i x1 = _mm256_set1_epi32((int)draw), x2 = _mm256_set1_epi32((int)(uint32_t)row);
        __m256i x3 = _mm256_set1_epi32((int)(uint32_t)(row >> 32));
        uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
        for (int r = 0; r < 10; r++) {
            __m256i hi0, lo0, hi1, lo1;
            mul_wide8(x0, m0, &hi0, &lo0);
            mul_wide8(x2, m1, &hi1, &lo1);
            x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), _mm256_set1_epi32((int)k0));
            x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32((int)k1));
            x1 = lo1;
            x3 = lo0;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        _mm256_storeu_si256((__m256i *)(out[0] + i), x0);
        _mm256_storeu_si256((__m256i *)(out[1] + i), x1);
        _mm256_storeu_si256((__m256i *)(out[2] + i), x2);
        _mm256_storeu_si256((__m256i *)(out[3] + i), x3);
    }
#endif
    for (; i < lanes; i++) {
        uint32_t x[4] = {group[i], draw, (uint32_t)row, (uint32_t)(row >> 32)};
        philox10(x, (uint32_t)seed, (uint32_t)(seed >> 32));
        for (int w = 0; w < 4; w++) out[w][i] = x[w];
    }
}

/* out[q * lanes + i]: normal of column 4 * group[i] + q, for i < lanes <= LANES,
 * lanes a multiple of 8 (each lane's normals depend on its counter alone). Inlined:
 * the dense path's full blocks call it with lanes = LANES known, the other calls with
 * lanes known only at run time (gcc fully unrolls short loops of known length, and
 * unrolled code does not call the vector math; 2 * LANES = 64 iterations stay loops,
 * and the outputs are the same either way, checked bit for bit). */
static inline __attribute__((always_inline)) void normal_lanes(
    uint64_t seed, const uint32_t *restrict group, uint32_t draw, uint64_t row, int lanes,
    float *restrict out) {
    uint32_t w[4][LANES], first[2 * LANES], second[2 * LANES];
    float radius[2 * LANES], angle[2 * LANES], even[2 * LANES], odd[2 * LANES];
    const size_t part = sizeof(float) * (size_t)lanes;
    philox_block(seed, group, draw, row, lanes, w);
    memcpy(first, w[0], part);
    memcpy(first + lanes, w[2], part);
    memcpy(second, w[1], part);
    memcpy(second + lanes, w[3], part);
    const float scale = 1.0f / 16777216.0f, two_pi = 6.28318530717958647692f;
    for (int i = 0; i < 2 * lanes; i++)
        radius[i] = sqrtf(-2.0f * logf(((float)(first[i] >> 8) + 0.5f) * scale));
    for (int i = 0; i < 2 * lanes; i++) angle[i] = two_pi * ((float)(second[i] >> 8) * scale);
    /* sin(a) as cos(a - pi/2): gcc fuses sinf and cosf of one angle into sincosf, which has
     * no vector version. */
    for (int i = 0; i < 2 * lanes; i++) even[i] = radius[i] * cosf(angle[i]);
    for (int i = 0; i < 2 * lanes; i++) odd[i] = radius[i] * cosf(angle[i] - 1.57079632679489662f);
    memcpy(out, even, part);
    memcpy(out + lanes, odd, part);
    memcpy(out + 2 * lanes, even + lanes, part);
    memcpy(out + 3 * lanes, odd + lanes, part);
}

/* Debug/test entry: the normals of columns [0, n) of row `row`, draw `draw`. */
void sktopk_normals(uint64_t seed, uint64_t row, uint32_t draw, int64_t n, float *out) {
    uint32_t group[LANES];
    float z[4][LANES];
    for (int64_t start = 0; start < n; start += 4 * LANES) {
        for (int i = 0; i < LANES; i++) group[i] = (uint32_t)(start / 4 + i);
        normal_lanes(seed, group, draw, row, LANES, &z[0][0]);
        for (int i = 0; i < LANES; i++)
            for (int q = 0; q < 4; q++) {
                int64_t col = start + 4 * i + q;
                if (col < n) out[col] = z[q][i];
            }
    }
}
/* ---- The exact sparse path (thinning), shared helpers ----
 * Its randomness is a second Philox stream of the same key: row index with its
 * top bit set, so it never meets the dense path's counters. Counters 0, 1, ...
 * give the candidates' normals (through normal_lanes); counters from 2^31 on
 * give the uniforms of the proposals, four words at a time. */
#define SPARSE_TAG (1ULL << 63)
#define UNIFORM_COUNTER 0x80000000u

typedef struct {
    uint64_t seed, row;
    uint32_t draw, counter, words[4 * 8];
    int used, available;
} uniform_stream;

/* The uniforms of (seed, row, draw), from counter UNIFORM_COUNTER on. */
static uniform_stream uniforms_of(uint64_t seed, uint64_t row, uint32_t draw) {
    uniform_stream stream = {seed, row, draw, UNIFORM_COUNTER, {0}, 0, 0};
    return stream;
}

static void philox_one(uint64_t seed, uint32_t c0, uint32_t c1, uint64_t row, uint32_t out[4]) {
    out[0] = c0;
    out[1] = c1;
    out[2] = (uint32_t)row;
    out[3] = (uint32_t)(row >> 32);
    philox10(out, (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* The next words of the stream: one counter the first time (most draws of a cheap
 * row need no more), then eight at once in vector form. The words come in counter
 * order either way, so a draw's uniforms do not depend on the refills. */
static void refill(uniform_stream *stream) {
    if (stream->counter == UNIFORM_COUNTER) {
        philox_one(stream->seed, stream->counter++, stream->draw, stream->row, stream->words);
        stream->available = 4;
    } else {
        uint32_t group[LANES], out[4][LANES];
        for (int i = 0; i < 8; i++) group[i] = stream->counter + (uint32_t)i;
        philox_block(stream->seed, group, stream->draw, stream->row, 8, out);
        for (int i = 0; i < 8; i++)
            for (int w = 0; w < 4; w++) stream->words[4 * i + w] = out[w][i];
        stream->counter += 8;
        stream->available = 4 * 8;
    }
    stream->used = 0;
}

/* A uniform in (0, 1] with 53 random bits (two words). */
static double next_uniform(uniform_stream *stream) {
    if (stream->used >= stream->available) refill(stream);
    uint64_t hi = stream->words[stream->used] >> 5, lo = stream->words[stream->used + 1] >> 6;
    stream->used += 2;
    return ((double)((hi << 26) | lo) + 1.0) * (1.0 / 9007199254740992.0);
}

/* Q(t) = P(Z > t). */
static double upper_tail(double t) { return 0.5 * erfc(t * 0.70710678118654752440); }

/* phi(t), the standard Gaussian density: one exp, shared by the two bounds below. */
static double normal_density(double t) { return 0.39894228040143267794 * exp(-0.5 * t * t); }

/* An upper bound of Q(t) for t >= 0, from density = phi(t): Sampford's (1953) bound on
 * Mills' ratio, Q(t) < phi(t) 4 / (3t + sqrt(t^2 + 8)), at most 12.8% above Q (at t = 0)
 * and 0.3% from t = 2 on; lifted by 1e-12 to cover its own rounding, and to at least
 * the smallest normal double, under which (t > 37.5) rounding is no longer relative. */
static double upper_tail_bound(double t, double density) {
    const double bound = density * 4.0 / (3.0 * t + sqrt(t * t + 8.0)) * (1.0 + 1e-12);
    return bound > DBL_MIN ? bound : DBL_MIN;
}

/* Test entry: the bound. */
double sktopk_upper_tail_bound(double t) { return upper_tail_bound(t, normal_density(t)); }

/* A lower bound of Q(t) for t >= 0, from density = phi(t): Birnbaum's (1942) bound on
 * Mills' ratio, Q(t) > phi(t) 2 / (t + sqrt(t^2 + 4)), at most 20% below Q (at t = 0);
 * lowered by 1e-12 to cover its own rounding. */
static double lower_tail_bound(double t, double density) {
    return density * 2.0 / (t + sqrt(t * t + 4.0)) * (1.0 - 1e-12);
}

/* Test entry: the bound. */
double sktopk_lower_tail_bound(double t) { return lower_tail_bound(t, normal_density(t)); }

/* Z ~ N(0, 1) conditioned on Z > a, for a >= 0: Robert's (1995) rejection from the
 * exponential a + Exp(lambda), lambda = (a + sqrt(a^2 + 4)) / 2, which accepts with
 * probability 0.76 or more (1.3 tries at most on average, each a log and an exp). */
static double normal_beyond(double a, uniform_stream *stream) {
    const double rate = 0.5 * (a + sqrt(a * a + 4.0));
    for (;;) {
        const double z = a - log(next_uniform(stream)) / rate, gap = z - rate;
        if (next_uniform(stream) <= exp(-0.5 * gap * gap)) return z;
    }
}

/* Test entry: n draws of normal_beyond(a), from the uniforms of (seed, row 0, draw 0). */
void sktopk_normal_beyond(double a, uint64_t seed, int64_t n, double *out) {
    uniform_stream stream = uniforms_of(seed, SPARSE_TAG, 0);
    for (int64_t i = 0; i < n; i++) out[i] = normal_beyond(a, &stream);
}

/* t with Q(t) = p, for p in (0, 1]: Acklam's rational approximation of the
 * normal quantile (relative error 1.2e-9) and one Halley step on erfc. */
static double upper_quantile(double p) {
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                               -2.759285104469687e+02, 1.383577518672690e+02,
                               -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                               -1.556989798598866e+02, 6.680131188771972e+01,
                               -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                               -2.400758277161838e+00, -2.549732539343734e+00,
                               4.374664141464968e+00, 2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                               2.445134137142996e+00, 3.754408661907416e+00};
    /* x: the lower quantile of p, so that t = -x. */
    const double low = 0.02425;
    double x;
    if (p >= 1.0) return -INFINITY;
    /* Upper half by symmetry: 1 - p is exact there, and the Halley step below
     * loses digits to cancellation when p is close to 1. */
    if (p > 0.5) return -upper_quantile(1.0 - p);
    if (p < low) {
        double q = sqrt(-2.0 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
    } else if (p <= 1.0 - low) {
        double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
    } else {
        double q = sqrt(-2.0 * log1p(-p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
    }
    /* Halley on F(x) = Phi(x) - p, Phi(x) = Q(-x). */
    double e = upper_tail(-x) - p;
    double u = e * 2.50662827463100050242 * exp(0.5 * x * x);
    x = x - u / (1.0 + 0.5 * x * u);
    return -x;
}

/* Test entry: the inverse Gaussian tail used by the sparse path. */
double sktopk_upper_quantile(double p) { return upper_quantile(p); }

/* ---- The cost rule's estimate (sktopk._sparse_perturbed._expected_kth) ----
 * For each of R rows of sorted top scores (row r at top + r * W, descending) and
 * each candidate count m in sizes: the root u of sum_{j < m} P(s_j + eps Z > u) =
 * k - 1/2, by the same 8 bisection steps from [s_(k) - 8 eps, s_(1) + 8 eps] as the
 * torch version. Phi comes from Abramowitz and Stegun 7.1.26 (absolute error
 * below 1.5e-7), in a flat loop that vectorises: a cost estimate needs no more. */
static inline float phi_approx(float x) { /* P(Z <= x) */
    const float t = fabsf(x) * 0.70710678f, tau = 1.0f / (1.0f + 0.3275911f * t);
    const float poly = tau * (0.254829592f + tau * (-0.284496736f + tau * (1.421413741f +
                       tau * (-1.453152027f + tau * 1.061405429f))));
    const float half_tail = 0.5f * poly * expf(-t * t); /* P(Z > |x|) */
    return x >= 0.0f ? 1.0f - half_tail : half_tail;
}

void sktopk_expected_kth(const float *top, int64_t R, int64_t W, int64_t k, double eps_d,
                         const int64_t *sizes, int64_t n_sizes, float *out) {
    const float eps = (float)eps_d, inverse = 1.0f / eps, target = (float)k - 0.5f;
    for (int64_t r = 0; r < R; r++) {
        const float *s = top + r * W;
        for (int64_t i = 0; i < n_sizes; i++) {
            const int64_t m = sizes[i];
            float low = s[k - 1] - 8.0f * eps, high = s[0] + 8.0f * eps;
            for (int step = 0; step < 8; step++) {
                const float mid = 0.5f * (low + high);
                float mass = 0.0f;
                for (int64_t j = 0; j < m; j++) mass += phi_approx((s[j] - mid) * inverse);
                if (mass > target) low = mid;
                else high = mid;
            }
            out[r * n_sizes + i] = 0.5f * (low + high);
        }
    }
}

#ifdef __AVX2__
/* How many of the first k <= 8 entries of a float top list (values, columns) rank
 * above (value, column): a higher value, or an equal one and a lower column. */
static inline int count_above8(__m256 values, __m256i columns, float value, int32_t column,
                               int64_t k) {
    const __m256 one = _mm256_set1_ps(value);
    const __m256i above = _mm256_or_si256(
        _mm256_castps_si256(_mm256_cmp_ps(values, one, _CMP_GT_OQ)),
        _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(values, one, _CMP_EQ_OQ)),
                         _mm256_cmpgt_epi32(_mm256_set1_epi32(column), columns)));
    return __builtin_popcount(
        (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(above)) & ((1u << k) - 1));
}

/* pack_table()[mask]: the lanes set in the 8-bit mask, first, as a permutation of 8
 * lanes (the rest 0). Built at first use; threads racing there write the same values. */
static const uint32_t (*pack_table(void))[8] {
    static uint32_t pack[256][8];
    static int ready = 0;
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        for (int mask = 0; mask < 256; mask++) {
            int n = 0;
            for (int lane = 0; lane < 8; lane++)
                if (mask >> lane & 1) pack[mask][n++] = (uint32_t)lane;
            for (; n < 8; n++) pack[mask][n] = 0;
        }
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    return (const uint32_t (*)[8])pack;
}
#endif

/* The typed part, once per score dtype (this file includes itself). */
#define SKTOPK_TYPED_PART
#define CONCAT_(a, b) a##_##b
#define CONCAT(a, b) CONCAT_(a, b)
#define NAME(name) CONCAT(name, SUFFIX)

#define TYPE float
#define SUFFIX f32
#define LOWEST (-FLT_MAX)
#include __FILE__
#undef TYPE
#undef SUFFIX
#undef LOWEST

#define TYPE double
#define SUFFIX f64
#define LOWEST (-DBL_MAX)
#include __FILE__

#else /* SKTOPK_TYPED_PART: TYPE, SUFFIX and LOWEST are defined */

/* Whether row[0, C) holds NaN or an infinity (x - x is 0 only for finite x). The
 * kernels check each row after their first pass over it (which NaN cannot derail),
 * and return NON_FINITE: the losses then need not read the scores for that. A flat
 * loop that vectorises, on a row already in cache. */
static inline int NAME(has_non_finite)(const TYPE *row, int64_t C) {
    int bad = 0;
    for (int64_t c = 0; c < C; c++) bad |= !(row[c] - row[c] == (TYPE)0);
    return bad;
}

/* Insert (v, col) into the top list, sorted by value then lower column first. A
 * full list loses its last entry: only offer (below) calls it, with what ranks above. */
static inline void NAME(insert)(TYPE *topv, int32_t *topi, int64_t *filled, int64_t k,
                                   TYPE v, int32_t col) {
#ifdef __AVX2__
    if (sizeof(TYPE) == 4 && k <= 8 && *filled == k) {
        /* A full float list of at most 8 entries, in one vector each for the values
         * and the columns: the position is the count of entries ranking above (v,
         * col), and the entries below it move one lane down. A scan from the end
         * stopped at a mispredicted branch on every insertion. Lanes from k on hold
         * whatever they held (the lists have MAX_K entries) and are never read. */
        const __m256 values = _mm256_loadu_ps((const float *)topv), value = _mm256_set1_ps((float)v);
        const __m256i columns = _mm256_loadu_si256((const __m256i *)topi);
        const __m256i column = _mm256_set1_epi32(col);
        const int pos = count_above8(values, columns, (float)v, col, k);
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i down = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
        const __m256i at = _mm256_set1_epi32(pos);
        const __m256i after = _mm256_cmpgt_epi32(lane, at), here = _mm256_cmpeq_epi32(lane, at);
        __m256 new_values = _mm256_blendv_ps(values, _mm256_permutevar8x32_ps(values, down),
                                             _mm256_castsi256_ps(after));
        new_values = _mm256_blendv_ps(new_values, value, _mm256_castsi256_ps(here));
        __m256i new_columns = _mm256_blendv_epi8(
            columns, _mm256_permutevar8x32_epi32(columns, down), after);
        new_columns = _mm256_blendv_epi8(new_columns, column, here);
        _mm256_storeu_ps((float *)topv, new_values);
        _mm256_storeu_si256((__m256i *)topi, new_columns);
        return;
    }
#endif
    int64_t pos = *filled < k ? (*filled)++ : k - 1;
    while (pos > 0 && (topv[pos - 1] < v || (topv[pos - 1] == v && topi[pos - 1] > col))) {
        topv[pos] = topv[pos - 1];
        topi[pos] = topi[pos - 1];
        pos--;
    }
    topv[pos] = v;
    topi[pos] = col;
}

/* Fill an empty top list with (v, col)[0, k); returns k. For float lists of at most
 * 8 entries, each value's place is the count of the others ranking above it,
 * counted eight at a time: inserting them one by one ended every insertion at a
 * mispredicted branch. */
static inline int64_t NAME(fill)(TYPE *topv, int32_t *topi, int64_t *filled, int64_t k,
                                 const TYPE *v, const int32_t *col) {
#ifdef __AVX2__
    if (sizeof(TYPE) == 4 && k <= 8) {
        float value[8] = {0};
        int32_t column[8] = {0};
        for (int64_t i = 0; i < k; i++) {
            value[i] = (float)v[i];
            column[i] = col[i];
        }
        const __m256 values = _mm256_loadu_ps(value);
        const __m256i columns = _mm256_loadu_si256((const __m256i *)column);
        for (int64_t i = 0; i < k; i++) {
            const int place = count_above8(values, columns, value[i], column[i], k);
            topv[place] = v[i];
            topi[place] = col[i];
        }
        *filled = k;
        return k;
    }
#endif
    for (int64_t i = 0; i < k; i++) NAME(insert)(topv, topi, filled, k, v[i], col[i]);
    return k;
}

/* Offer (v, col) to the top list: it goes in while the list is not full, then
 * only if it ranks above the k-th entry (higher value, or equal and lower column). */
static inline void NAME(offer)(TYPE *topv, int32_t *topi, int64_t *filled, int64_t k, TYPE v,
                               int32_t col) {
    if (*filled == k && (v < topv[k - 1] || (v == topv[k - 1] && col > topi[k - 1]))) return;
    NAME(insert)(topv, topi, filled, k, v, col);
}

/* Flags (bytes 0 or 1, eight per word) of the 16 values p[0, 16) at or above bar. */
static inline void NAME(flags16)(const TYPE *p, TYPE bar, uint64_t word[2]) {
    unsigned char hit[16];
#pragma GCC unroll 1 /* (fully unrolled, it would compare one value at a time) */
    for (int t = 0; t < 16; t++) hit[t] = p[t] >= bar;
    memcpy(word, hit, 16);
}

/* One block of a draw of the dense path: the normals of `lanes` groups (columns
 * 4 group[i] + q at slot q * lanes + i; lanes past n_lanes are padding, computed and
 * never offered), added to their scores, and the values that reach the bar offered.
 * With `seeds` (the first block of a seeded row), the list starts from the values of
 * those slots and their columns, and `keep` masks those slots off the offers. */
static inline __attribute__((always_inline)) void NAME(dense_block)(
    uint64_t seed, const uint32_t *group, uint32_t draw, uint64_t row, const int lanes,
    int64_t n_lanes, const TYPE *sorted, int64_t padded, TYPE eps, int64_t C, int64_t k,
    const int32_t *seeds, const int32_t *seed_col, const unsigned char *keep, TYPE *topv,
    int32_t *topi, int64_t *filled) {
    float z[4 * LANES];
    TYPE p[4 * LANES];
    normal_lanes(seed, group, draw, row, lanes, z);
    for (int q = 0; q < 4; q++)
        for (int i = 0; i < lanes; i++)
            p[q * lanes + i] = sorted[q * padded + i] + eps * (TYPE)z[q * lanes + i];
    if (seeds) {
        TYPE seed_value[MAX_K];
        for (int64_t r = 0; r < k; r++) seed_value[r] = p[seeds[r]];
        NAME(fill)(topv, topi, filled, k, seed_value, seed_col);
    }
    const TYPE bar = *filled == k ? topv[k - 1] : LOWEST;
    int any = 0;
    for (int j = 0; j < 4 * lanes; j++) any |= p[j] >= bar;
    if (!any) return;
    /* The flagged values, 16 at a time against the bar as it rises. */
    for (int w = 0; w < 4 * lanes; w += 16) {
        uint64_t word[2];
        NAME(flags16)(p + w, *filled == k ? topv[k - 1] : LOWEST, word);
        if (seeds) { /* the seeded values are in already */
            uint64_t kept[2];
            memcpy(kept, keep + w, 16);
            word[0] &= kept[0];
            word[1] &= kept[1];
        }
        for (int half = 0; half < 2; half++)
            for (; word[half]; word[half] &= word[half] - 1) { /* lowest first */
                const int j = w + 8 * half + (__builtin_ctzll(word[half]) >> 3);
                const int q = j / lanes, i = j % lanes;
                const int64_t col = 4 * (int64_t)group[i] + q;
                if (i >= n_lanes || col >= C) continue;
                NAME(offer)(topv, topi, filled, k, p[j], col);
            }
    }
}

/* Rows [row_begin, row_end) of x (N, C) into values (N,) and indices (N, B); k <= MAX_K.
 * Returns 0, -1 when out of memory, or NON_FINITE when a row holds NaN or an infinity. */
int NAME(sktopk_kth_perturbed)(const TYPE *x, int64_t C, int64_t k, double eps_d,
                                  int64_t B, uint64_t seed, int64_t row_begin, int64_t row_end,
                                  int skip, TYPE *values, int64_t *indices) {
    const TYPE eps = (TYPE)eps_d, reach = (TYPE)eps_d * (TYPE)ZMAX;
    const int64_t n_groups = (C + 3) / 4, padded = n_groups + LANES;
    TYPE *gmax = malloc(sizeof(TYPE) * n_groups);
    TYPE *planar = malloc(sizeof(TYPE) * 4 * padded), *sorted = calloc(4 * padded, sizeof(TYPE));
    uint32_t *order = calloc(padded, sizeof(uint32_t));
    if (!gmax || !planar || !sorted || !order) {
        free(gmax);
        free(planar);
        free(sorted);
        free(order);
        return -1;
    }
    int status = 0;
    for (int64_t n = row_begin; n < row_end; n++) {
        const TYPE *row = x + n * C;
        TYPE topv[MAX_K] = {0};
        int32_t topi[MAX_K] = {0};
        int64_t filled = 0;
        /* The row de-interleaved by position in its group (planar[q * padded + g] is
         * column 4g + q; missing columns get the lowest value), the groups' maxima, and
         * the row's k largest scores; then the row is checked to be finite (while it
         * is in cache, so that the loss need not read it again). */
        for (int64_t g = 0; g < n_groups; g++) {
            TYPE m = LOWEST;
            for (int q = 0; q < 4; q++) {
                TYPE v = 4 * g + q < C ? row[4 * g + q] : LOWEST;
                planar[q * padded + g] = v;
                m = v > m ? v : m;
            }
            gmax[g] = m;
        }
        if (NAME(has_non_finite)(row, C)) {
            status = NON_FINITE;
            break;
        }
        for (int64_t c = 0; c < C; c++) NAME(offer)(topv, topi, &filled, k, row[c], c);
        /* Groups no draw can use: their maximum lifted by eps ZMAX still rounds below
         * the k-th score lowered by it, so (rounding is monotone) every draw puts k
         * columns strictly above all of theirs. The test is on the rounded sums: a cut
         * on L - 2 eps ZMAX, itself rounded, could drop a column that ties the k-th
         * value after rounding. Their maximum becomes -inf; `cutoff` is the lowest kept. */
        const TYPE top = topv[0], floor_k = topv[k - 1] - reach;
        TYPE cutoff = top;
        for (int64_t g = 0; skip && g < n_groups; g++) {
            if (gmax[g] + reach < floor_k) gmax[g] = -INFINITY;
            else cutoff = gmax[g] < cutoff ? gmax[g] : cutoff;
        }
        /* The groups kept, by level of their maximum (counting sort); without skipping,
         * every group, in order, in level 0. A range beyond the largest float makes the
         * width inf and a ratio inf / inf: NaN goes to the last level, never to a cast
         * (no draw stops early then: the bound is inf). */
        const TYPE width = skip ? (top - cutoff) / LEVELS : 0;
        int64_t start[LEVELS + 1] = {0}, fill[LEVELS];
        for (int64_t g = 0; g < n_groups; g++) {
            if (skip && gmax[g] < cutoff) continue;
            const TYPE ratio = width > 0 ? (top - gmax[g]) / width : 0;
            start[(ratio < LEVELS ? (int64_t)ratio : LEVELS - 1) + 1]++;
        }
        for (int l = 0; l < LEVELS; l++) start[l + 1] += start[l];
        memcpy(fill, start, sizeof(fill));
        for (int64_t g = 0; g < n_groups; g++) {
            if (skip && gmax[g] < cutoff) continue;
            const TYPE ratio = width > 0 ? (top - gmax[g]) / width : 0;
            order[fill[ratio < LEVELS ? (int64_t)ratio : LEVELS - 1]++] = (uint32_t)g;
        }
        memset(order + start[LEVELS], 0, sizeof(uint32_t) * LANES);
        /* The scores in visiting order, so that each draw reads them contiguously. */
        for (int q = 0; q < 4; q++)
            for (int64_t t = 0; t < start[LEVELS]; t++)
                sorted[q * padded + t] = planar[q * padded + order[t]];
        /* Visiting blocks of LANES groups in level order, a draw stops at the first block
         * whose groups cannot reach its running k-th value: they score at most their first
         * group's maximum plus one level width (two, to cover the level's rounding). */
        const int64_t n_used = start[LEVELS];
        /* The row's k best columns, when all lie in the first block (as they do unless
         * more than LANES groups tie for the top level): each draw starts its list
         * from their perturbed values, whose minimum is a bar that the draw's k-th
         * value cannot fall below, so few other values are offered. Started from an
         * empty list, the first block offered 16 values and then every value above
         * a low bar: most of a draw's cost at C <= 128. */
        const int lanes0 = n_used < LANES ? (int)((n_used + 7) / 8 * 8) : LANES;
        int32_t seed_slot[MAX_K], seed_col[MAX_K];
        unsigned char keep[4 * LANES]; /* 0 at the seeded slots of the first block */
        int seeded = n_used > 0;
        for (int64_t r = 0; seeded && r < k; r++) {
            const int64_t g = topi[r] / 4;
            int found = -1;
            for (int i = 0; i < lanes0 && i < n_used; i++)
                if (order[i] == (uint32_t)g) {
                    found = i;
                    break;
                }
            seeded = found >= 0;
            seed_slot[r] = (topi[r] % 4) * lanes0 + found;
            seed_col[r] = topi[r];
        }
        memset(keep, 1, sizeof(keep));
        for (int64_t r = 0; seeded && r < k; r++) keep[seed_slot[r]] = 0;
        double total = 0.0;
        for (int64_t b = 0; b < B; b++) {
            filled = 0;
            for (int64_t s = 0; s < n_used; s += LANES) {
                if (skip && filled == k && gmax[order[s]] + 2 * width + reach < topv[k - 1]) break;
                const int64_t n_lanes = n_used - s < LANES ? n_used - s : LANES;
                /* A last block of fewer groups draws fewer lanes, a multiple of 8 (the
                 * vector width; each lane's normals depend on its counter alone).
                 * dense_block is inlined twice: with lanes = LANES, a constant that turns
                 * the slot arithmetic (j / lanes) into shifts (a run-time count in every
                 * block cost 4-8% at C = 1000), and with the last block's count. */
                const int lanes = n_lanes < LANES ? (int)((n_lanes + 7) / 8 * 8) : LANES;
                const int32_t *seeds = s == 0 && seeded ? seed_slot : NULL;
                if (lanes == LANES)
                    NAME(dense_block)(seed, order + s, (uint32_t)b, (uint64_t)n, LANES, n_lanes,
                                      sorted + s, padded, eps, C, k, seeds, seed_col, keep,
                                      topv, topi, &filled);
                else
                    NAME(dense_block)(seed, order + s, (uint32_t)b, (uint64_t)n, lanes, n_lanes,
                                      sorted + s, padded, eps, C, k, seeds, seed_col, keep,
                                      topv, topi, &filled);
            }
            total += (double)topv[k - 1];
            indices[n * B + b] = topi[k - 1];
        }
        values[n] = (TYPE)(total / (double)B);
    }
    free(gmax);
    free(planar);
    free(sorted);
    free(order);
    return status;
}


/* The largest of the entries of v[0, n) below cut, and of `start`; NaN-free. Eight
 * running maxima: a plain running maximum does not vectorise without -ffast-math. */
static inline TYPE NAME(max_below)(const TYPE *v, int64_t n, TYPE cut, TYPE start) {
    TYPE lane[8];
    for (int l = 0; l < 8; l++) lane[l] = start;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) {
            const TYPE below = v[i + l] < cut ? v[i + l] : start;
            lane[l] = below > lane[l] ? below : lane[l];
        }
    for (; i < n; i++) {
        const TYPE below = v[i] < cut ? v[i] : start;
        lane[0] = below > lane[0] ? below : lane[0];
    }
    TYPE best = lane[0];
    for (int l = 1; l < 8; l++) best = lane[l] > best ? lane[l] : best;
    return best;
}

/* Swap entries a and b of (v, ix); ix may be NULL. */
static inline void NAME(swap)(TYPE *v, int32_t *ix, int64_t a, int64_t b) {
    const TYPE tv = v[a];
    v[a] = v[b];
    v[b] = tv;
    if (ix) {
        const int32_t ti = ix[a];
        ix[a] = ix[b];
        ix[b] = ti;
    }
}

/* Move the entries of [lo, end) above the pivot (at or above it with or_equal) to
 * the front; returns where they stop. Branch-free Lomuto: an unconditional swap
 * keeps [lo, store) on the pivot's side and [store, i) off it. Inlined with a
 * constant or_equal, and unswitched on ix, so each call site gets its own loop. */
static inline int64_t NAME(partition)(TYPE *v, int32_t *ix, int64_t lo, int64_t end,
                                      TYPE pivot, int or_equal) {
    int64_t store = lo;
    if (ix) {
        for (int64_t i = lo; i < end; i++) {
            const TYPE a = v[i];
            const int32_t ai = ix[i];
            v[i] = v[store];
            ix[i] = ix[store];
            v[store] = a;
            ix[store] = ai;
            store += or_equal ? a >= pivot : a > pivot;
        }
    } else {
        for (int64_t i = lo; i < end; i++) {
            const TYPE a = v[i];
            v[i] = v[store];
            v[store] = a;
            store += or_equal ? a >= pivot : a > pivot;
        }
    }
    return store;
}

/* Rearrange (v, ix)[0, n) so that its first r entries are the r largest values and,
 * for 0 < r < n, v[r - 1] is the r-th largest (every exit below leaves it there);
 * ix may be NULL (values only). Quickselect with a branch-free partition: the
 * comparisons against the pivot are unpredictable, a branch on each would be
 * mispredicted half the time. */
static void NAME(select_top)(TYPE *v, int32_t *ix, int64_t n, int64_t r) {
    int64_t lo = 0, hi = n; /* the r-th largest lies in [lo, hi); [0, lo) are above it */
    if (r <= 0 || r >= n) return;
    while (hi - lo > 1) {
        /* Median of three to the end, as the pivot. */
        const int64_t mid = lo + (hi - lo) / 2, last = hi - 1;
        const TYPE a = v[lo], b = v[mid], c = v[last];
        const int64_t at = (a <= b) == (b <= c) ? mid : (b <= a) == (a <= c) ? lo : last;
        NAME(swap)(v, ix, at, last);
        const TYPE pivot = v[last];
        int64_t store = NAME(partition)(v, ix, lo, last, pivot, 0);
        if (store == lo) {
            /* Nothing above the pivot: it is the maximum. Gather its ties at the front
             * (they are all maxima) so that runs of equal values take one pass. */
            store = NAME(partition)(v, ix, lo, hi, pivot, 1);
            /* No progress only when the pivot is NaN (unordered input): stop there. */
            if (store >= r || store == lo) return;
            lo = store;
            continue;
        }
        NAME(swap)(v, ix, store, last);
        /* Now [lo, store) > v[store] = pivot >= (store, hi). */
        if (store == r - 1) return;
        if (store > r - 1) hi = store;
        else lo = store + 1;
    }
}

/* Nested selections over ascending edges e_0 < ... < e_{n-1} (e_{n-1} <= the length
 * of v): afterwards each [e_t, e_{t+1}) holds the (e_t + 1)-th to e_{t+1}-th largest
 * of [0, e_{n-1}), and top[t] is its highest, the (e_t + 1)-th largest. Each
 * selection works on what the one before kept. */
static void NAME(segment_tops)(TYPE *v, int32_t *ix, const int64_t *edge, int64_t n_edges,
                               TYPE *top) {
    for (int64_t t = n_edges - 2; t >= 0; t--) {
        /* The (e_t + 1)-th largest lands at e_t, after the e_t above it; a segment of
         * one entry is that entry once the e_t above it are in front. */
        const int64_t above = edge[t + 1] - edge[t] > 1 ? edge[t] + 1 : edge[t];
        NAME(select_top)(v, ix, edge[t + 1], above);
        top[t] = v[edge[t]];
    }
}

/* Order statistics of R rows for the sampler's cost rule (row r at x + rows[r] * C):
 * out[r * W + j] is the (j + 1)-th largest score of the row for j < head (so sorted)
 * and for each j in edges[0 .. n_edges - 1) (ascending, head <= j < W; the last edge
 * is W itself); other entries are NaN. Nested selections, each on the part the
 * previous one kept: O(C) per row rather than a sort. Returns 0, or -1 when out of
 * memory. */
int NAME(sktopk_order_statistics)(const TYPE *x, int64_t C, const int64_t *rows, int64_t R,
                                  int64_t W, int64_t head, const int64_t *edges,
                                  int64_t n_edges, TYPE *out) {
    TYPE *v = malloc(sizeof(TYPE) * C), *top = malloc(sizeof(TYPE) * n_edges);
    if (!v || !top) {
        free(v);
        free(top);
        return -1;
    }
    for (int64_t r = 0; r < R; r++) {
        TYPE *o = out + r * W;
        memcpy(v, x + rows[r] * C, sizeof(TYPE) * C);
        for (int64_t j = 0; j < W; j++) o[j] = (TYPE)NAN;
        NAME(select_top)(v, NULL, C, W);
        NAME(segment_tops)(v, NULL, edges, n_edges, top);
        for (int64_t t = 0; t + 1 < n_edges; t++) o[edges[t]] = top[t];
        NAME(select_top)(v, NULL, edges[0], head);
        for (int64_t i = 1; i < head; i++) { /* insertion sort, descending: head is small */
            const TYPE value = v[i];
            int64_t j = i;
            for (; j > 0 && v[j - 1] < value; j--) v[j] = v[j - 1];
            v[j] = value;
        }
        memcpy(o, v, sizeof(TYPE) * head);
    }
    free(v);
    free(top);
    return 0;
}

/* The sampler rule's sparse estimates in one call (sktopk._sparse_perturbed._sparse_costs
 * on the order statistics of _subset_top): the sorted head and the slots of R rows
 * (order_statistics, W = width), the root u of each candidate count (expected_kth on
 * the head in float), each group's rate averaged over the rows, rate[i][j] = mean_r
 * Q((u[r][i] - s_r[slot j]) / eps), and for each (m, pool) combination c:
 *   estimate[c] = fixed + N (pool_score C + pool_slot (pool + 1))
 *                 + N B (candidate m + pair + group groups) + proposal N B sum_p L_p rate[i_c][j_p]
 * over its pairs p in [pair_start[c], pair_start[c + 1]). costs = {fixed, pool_score,
 * pool_slot, candidate, pair, group, proposal}. Returns 0, or -1 when out of memory.
 * The Python version, in torch operations, cost 0.3-0.9 ms a call, mostly small
 * operations: the functional losses decide on every call. */
int NAME(sktopk_rule_estimates)(const TYPE *x, int64_t C, const int64_t *rows, int64_t R,
                                int64_t W, int64_t head, const int64_t *edges, int64_t n_edges,
                                int64_t k, double eps, const int64_t *sizes, int64_t n_sizes,
                                const int64_t *slots, int64_t n_slots, int64_t n_combos,
                                const int64_t *combo_size, const int64_t *combo_m,
                                const int64_t *combo_pool, const int64_t *combo_groups,
                                const int64_t *pair_start, const int64_t *pair_slot,
                                const int64_t *pair_length, int64_t n_rows, int64_t B,
                                const double *costs, double *estimates) {
    TYPE *top = malloc(sizeof(TYPE) * R * W);
    float *head_f = malloc(sizeof(float) * R * head), *u = malloc(sizeof(float) * R * n_sizes);
    double *rate = malloc(sizeof(double) * n_sizes * n_slots);
    if (!top || !head_f || !u || !rate ||
        NAME(sktopk_order_statistics)(x, C, rows, R, W, head, edges, n_edges, top) != 0) {
        free(top);
        free(head_f);
        free(u);
        free(rate);
        return -1;
    }
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < head; j++) head_f[r * head + j] = (float)top[r * W + j];
    sktopk_expected_kth(head_f, R, head, k, eps, sizes, n_sizes, u);
    for (int64_t i = 0; i < n_sizes; i++)
        for (int64_t j = 0; j < n_slots; j++) {
            double total = 0.0;
            for (int64_t r = 0; r < R; r++)
                total += upper_tail(
                    ((double)u[r * n_sizes + i] - (double)top[r * W + slots[j]]) / eps);
            rate[i * n_slots + j] = total / (double)R;
        }
    const double pairs = (double)n_rows * (double)B;
    for (int64_t c = 0; c < n_combos; c++) {
        double per_pair = 0.0;
        for (int64_t p = pair_start[c]; p < pair_start[c + 1]; p++)
            per_pair += (double)pair_length[p] * rate[combo_size[c] * n_slots + pair_slot[p]];
        const double pool = (double)(combo_pool[c] + 1), m = (double)combo_m[c];
        estimates[c] = costs[0] + (double)n_rows * (costs[1] * (double)C + costs[2] * pool) +
                       pairs * (costs[3] * m + costs[4] + costs[5] * (double)combo_groups[c]) +
                       costs[6] * pairs * per_pair;
    }
    free(top);
    free(head_f);
    free(u);
    free(rate);
    return 0;
}

/* The entries of src[0, n) at or above cut, with their columns (src_ix[i], or i
 * when src_ix is NULL), into (v, ix) in order; returns their count. The others are
 * dropped. v and ix need n + 8 entries (whole vectors are written). src may be v
 * itself: a vector is written at the count, never past the entries read so far.
 * Eight entries at a time with AVX2 (a table gives the permutation that packs the
 * kept ones first), else a branch-free scalar loop. Inlined, so that each caller
 * gets the loop for its own src_ix. */
static inline __attribute__((always_inline)) int64_t NAME(pack_at_or_above)(
    const TYPE *src, const int32_t *src_ix, int64_t n, TYPE cut, TYPE *v, int32_t *ix) {
    int64_t count = 0, i = 0;
#ifdef __AVX2__
    if (sizeof(TYPE) == 4) {
        const uint32_t (*pack)[8] = pack_table();
        const __m256 bar = _mm256_set1_ps((float)cut);
        __m256i col = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (; i + 8 <= n; i += 8) {
            const __m256 x = _mm256_loadu_ps((const float *)src + i);
            const __m256i c = src_ix ? _mm256_loadu_si256((const __m256i *)(src_ix + i)) : col;
            const int mask = _mm256_movemask_ps(_mm256_cmp_ps(x, bar, _CMP_GE_OQ));
            const __m256i order = _mm256_loadu_si256((const __m256i *)pack[mask]);
            _mm256_storeu_ps((float *)v + count, _mm256_permutevar8x32_ps(x, order));
            _mm256_storeu_si256((__m256i *)(ix + count), _mm256_permutevar8x32_epi32(c, order));
            count += __builtin_popcount((unsigned)mask);
            col = _mm256_add_epi32(col, _mm256_set1_epi32(8));
        }
    }
#endif
    for (; i < n; i++) {
        const TYPE value = src[i];
        const int32_t column = src_ix ? src_ix[i] : (int32_t)i;
        v[count] = value;
        ix[count] = column;
        count += value >= cut;
    }
    return count;
}

/* Proposals of one group (thinning): its members, in positions [0, length), are
 * proposed at rate q >= Q((u - bound) / eps) with geometric gaps, kept with
 * probability Q((u - s) / eps) / q, and given a value from N(s, eps^2) truncated
 * to (u, inf). Kept ones go into the top list. With `columns` NULL the group is
 * the whole row, minus the columns flagged in `skip`. Thinning is exact for any
 * rate at or above every member's probability, so q is Q's cheap upper bound
 * where u >= bound; the same bound rejects most proposals without erfc. */
static void NAME(propose)(const TYPE *score, const int32_t *columns, int64_t length,
                          const unsigned char *skip, double bound, double u, double eps,
                          uniform_stream *stream, TYPE *topv, int32_t *topi, int64_t *filled,
                          int64_t k) {
    const double lowest = (u - bound) / eps;
    double q = lowest >= 0.0 ? upper_tail_bound(lowest, normal_density(lowest))
                             : upper_tail(lowest);
    if (!(q > 0.0)) return;
    q = q < 1.0 ? q : 1.0;
    double gap = q < 1.0 ? next_uniform(stream) : 0.0;
    /* No proposal when the first gap passes the group: gap <= (1 - q)^length, which
     * holds whenever gap <= 1 - length q (Bernoulli): then log1p and log are skipped. */
    if (q < 1.0 && gap <= 1.0 - (double)length * q * (1.0 + 1e-9)) return;
    const double per_log_keep = q < 1.0 ? 1.0 / log1p(-q) : 0.0; /* a product per gap */
    const double half_lowest_squared = 0.5 * lowest * lowest;
    /* The gaps' uniforms: the one drawn above, then GAP_BATCH at a time from the
     * stream, their logarithms in one loop (vectorised with libmvec). Proposals are
     * then handled eight at a time: their positions, one uniform each, and the cheap
     * rejection test below in a loop without branches; only the few that pass it
     * (and are not skipped) go on, one by one. Which uniform serves which gap or
     * test is fixed before any is read, so the gaps stay independent geometric
     * draws and the tests independent of them; uniforms left unused are dropped. */
    double log_gap[GAP_BATCH];
    int next_gap = GAP_BATCH;
    log_gap[0] = gap;
    int first = 1, done = 0;
    double position = -1.0;
    while (!done) {
        int64_t at[8];
        int n = 0;
        for (; n < 8; n++) {
            if (q < 1.0) {
                if (next_gap == GAP_BATCH) {
                    for (int i = first; i < GAP_BATCH; i++) log_gap[i] = next_uniform(stream);
                    for (int i = 0; i < GAP_BATCH; i++) log_gap[i] = log(log_gap[i]);
                    next_gap = first = 0;
                }
                position += floor(log_gap[next_gap++] * per_log_keep) + 1.0;
            } else {
                position += 1.0;
            }
            if (position >= (double)length) {
                done = 1;
                break;
            }
            at[n] = (int64_t)position;
        }
        double uniform[8], s[8], t[8];
        for (int i = 0; i < n; i++) uniform[i] = next_uniform(stream);
        unsigned open = 0;
        for (int i = 0; i < n; i++) {
            s[i] = (double)score[at[i]];
            t[i] = (u - s[i]) / eps;
            /* Most proposals fall far below u: reject them without exp. Mills' ratio
             * decreases and q >= Q(lowest), so Q(t) / q <= phi(t) / phi(lowest) =
             * exp(-x), x = (t^2 - lowest^2) / 2, and exp(-x) <= 1 / (1 + x + x^2 / 2)
             * for x >= 0: what this rejects, the exact test below rejects too. */
            const double x = 0.5 * t[i] * t[i] - half_lowest_squared;
            const int rejected = (t[i] >= 0.0) & (x > 0.0) &
                                 (uniform[i] * (1.0 + x * (1.0 + 0.5 * x)) >= 1.0 + 1e-9);
            const int skipped = columns ? 0 : skip[at[i]];
            open |= (unsigned)(!(rejected | skipped)) << i;
        }
        for (; open; open &= open - 1) {
            const int i = __builtin_ctz(open);
            const double w = uniform[i] * q;
            double z; /* the accepted member's noise, beyond t */
            if (t[i] >= 0.0) {
                /* Kept when w < Q(t): decided by the bounds on Q, or by erfc between them. */
                const double density = normal_density(t[i]);
                if (w >= upper_tail_bound(t[i], density)) continue;
                if (w >= lower_tail_bound(t[i], density) && w >= upper_tail(t[i])) continue;
                z = normal_beyond(t[i], stream);
            } else {
                const double p = upper_tail(t[i]);
                if (w >= p) continue;
                /* W p can underflow to 0 for p near the smallest double: keep it positive. */
                double tail = next_uniform(stream) * p;
                tail = tail > DBL_MIN ? tail : DBL_MIN;
                z = upper_quantile(tail);
            }
            /* Above u, but maybe not above the k-th value of the list as it is now. */
            NAME(offer)(topv, topi, filled, k, (TYPE)(s[i] + eps * z),
                        columns ? columns[at[i]] : (int32_t)at[i]);
        }
    }
}

/* How many of v[0, n) are at or above t (a flat loop that vectorises). */
static inline int64_t NAME(count_at_or_above)(const TYPE *v, int64_t n, TYPE t) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) count += v[i] >= t;
    return count;
}

/* A threshold t with lo <= count(v[0, n) >= t) <= hi into *out; returns 0 when none
 * is found in a few steps (ties, or values bunched in a way interpolation misses),
 * and the caller then selects. Needs lo <= n. Each step counts the values at or
 * above a guess: an interpolation between the two bracketing guesses, every other
 * step their midpoint (so a bad interpolation costs at most one step). Selecting
 * by counts takes a few vector passes, where quickselect on a short array spends
 * most of its time in mispredicted branches. */
static int NAME(threshold_between)(const TYPE *v, int64_t n, int64_t lo, int64_t hi,
                                   TYPE *out) {
    TYPE low_lane[8], high_lane[8];
    for (int l = 0; l < 8; l++) low_lane[l] = high_lane[l] = v[0];
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) /* eight running extremes: one would not vectorise */
        for (int l = 0; l < 8; l++) {
            low_lane[l] = v[i + l] < low_lane[l] ? v[i + l] : low_lane[l];
            high_lane[l] = v[i + l] > high_lane[l] ? v[i + l] : high_lane[l];
        }
    for (; i < n; i++) {
        low_lane[0] = v[i] < low_lane[0] ? v[i] : low_lane[0];
        high_lane[0] = v[i] > high_lane[0] ? v[i] : high_lane[0];
    }
    TYPE low = low_lane[0], high = high_lane[0];
    for (int l = 1; l < 8; l++) {
        low = low_lane[l] < low ? low_lane[l] : low;
        high = high_lane[l] > high ? high_lane[l] : high;
    }
    /* count(>= low) = n > hi (else low itself is an answer), count(>= high) < lo. */
    if (n <= hi) {
        *out = low;
        return 1;
    }
    int64_t count_low = n, count_high = NAME(count_at_or_above)(v, n, high);
    if (count_high >= lo) {
        *out = high;
        return count_high <= hi;
    }
    const double target = 0.5 * ((double)lo + (double)hi);
    for (int step = 0; step < 12; step++) {
        TYPE guess;
        if (step % 2 == 0)
            guess = (TYPE)((double)low + ((double)high - (double)low) *
                                             (((double)count_low - target) /
                                              (double)(count_low - count_high)));
        else
            guess = (TYPE)(0.5 * ((double)low + (double)high));
        if (!(guess > low && guess < high)) return 0; /* adjacent values, or NaN */
        const int64_t count = NAME(count_at_or_above)(v, n, guess);
        if (count >= lo && count <= hi) {
            *out = guess;
            return 1;
        }
        if (count > hi) {
            low = guess;
            count_low = count;
        } else {
            high = guess;
            count_high = count;
        }
    }
    return 0;
}

/* The exact sparse path: rows [row_begin, row_end), m candidates, a sorted pool
 * of `pool` slots split in tiers [m, 2m), [2m, 4m), ..., and the rest of the
 * row as the last group (see sktopk._sparse_perturbed for the method and its
 * proof; k <= m <= pool <= C). Returns 0, -1 when out of memory, or NON_FINITE when a
 * row holds NaN or an infinity. */
int NAME(sktopk_kth_perturbed_sparse)(const TYPE *x, int64_t C, int64_t k, double eps,
                                      int64_t B, uint64_t seed, int64_t row_begin,
                                      int64_t row_end, int64_t m, int64_t pool, TYPE *values,
                                      int64_t *indices) {
    TYPE *v = malloc(sizeof(TYPE) * (C + 8)), *group_max = malloc(sizeof(TYPE) * C);
    int32_t *ix = malloc(sizeof(int32_t) * (C + 8));
    unsigned char *in_pool = calloc(C, 1);
    if (!v || !group_max || !ix || !in_pool) {
        free(v);
        free(group_max);
        free(ix);
        free(in_pool);
        return -1;
    }
    /* One top list for every draw, emptied by filled = 0; zeroed once, as the vector
     * insertion reads (and masks off) the entries past k. */
    TYPE topv[MAX_K] = {0};
    int32_t topi[MAX_K] = {0};
    /* Tier edges: m, 2m, 4m, ..., pool. */
    int64_t edge[64], n_edges = 0;
    for (int64_t e = m; e < pool && n_edges < 62; e *= 2) edge[n_edges++] = e;
    edge[n_edges++] = pool;
    int status = 0;
    for (int64_t n = row_begin; n < row_end; n++) {
        const TYPE *row = x + n * C;
        int64_t count = 0;
        TYPE bound = LOWEST; /* every column left out of v scores below it */
        /* This row's candidates and pool: m and pool, or (without tiers) the columns
         * at or above a threshold, between m - m / 32 and m of them. The method is
         * exact with any candidate set, given the highest score outside it. */
        int64_t cand = m, kept = pool;
        int found = 0;
        TYPE outside; /* every column outside the pool scores at most this */
        /* Groups of `width` columns (8, else 4 or 2 when the pool is too large for
         * that many groups): columns g, g + G, ..., g + (width - 1) G, G = C / width,
         * and the last C - width G alone, a layout that vectorises. */
        const int64_t width = pool < C / 8 ? 8 : pool < C / 4 ? 4 : pool < C / 2 ? 2 : 1;
        if (width > 1) {
            /* A lower bound of the pool-th largest score: a value that pool or more
             * groups' maxima reach (each is a column of its own); only the scores at
             * or above it go on to the selection. */
            const int64_t stride = C / width, rest = C - width * stride;
            const int64_t n_groups = stride + rest;
            for (int64_t g = 0; g < stride; g++) group_max[g] = row[g];
            for (int64_t j = 1; j < width; j++)
                for (int64_t g = 0; g < stride; g++)
                    group_max[g] = row[j * stride + g] > group_max[g] ? row[j * stride + g]
                                                                      : group_max[g];
            for (int64_t j = 0; j < rest; j++) group_max[stride + j] = row[width * stride + j];
            /* The row is finite (checked here, now that it is in cache, so that the loss
             * need not read it again; the maxima above, which NaN can disturb, are not
             * read before this check). */
            if (NAME(has_non_finite)(row, C)) {
                status = NON_FINITE;
                break;
            }
            TYPE tau;
            if (!NAME(threshold_between)(group_max, n_groups, pool, pool + pool / 8, &tau)) {
                memcpy(v, group_max, sizeof(TYPE) * n_groups);
                NAME(select_top)(v, NULL, n_groups, pool); /* pool < stride <= n_groups */
                tau = v[pool - 1];
            }
            count = NAME(pack_at_or_above)(row, NULL, C, tau, v, ix);
            bound = tau;
            TYPE cut;
            const int64_t fewest = m - m / 32 > k ? m - m / 32 : k;
            if (pool == m && NAME(threshold_between)(v, count, fewest, m, &cut)) {
                outside = NAME(max_below)(v, count, cut, bound);
                cand = kept = NAME(pack_at_or_above)(v, ix, count, cut, v, ix);
                found = 1;
            }
        } else {
            for (int64_t c = 0; c < C; c++) {
                v[c] = row[c];
                ix[c] = (int32_t)c;
            }
            if (NAME(has_non_finite)(row, C)) {
                status = NON_FINITE;
                break;
            }
            count = C;
        }
        if (!found) {
            NAME(select_top)(v, ix, count, pool);
            outside = NAME(max_below)(v + kept, count - kept, (TYPE)INFINITY, bound);
        }
        TYPE tier_top[64];
        NAME(segment_tops)(v, ix, edge, n_edges, tier_top);
        NAME(select_top)(v, ix, cand, k); /* the k best first: the draws' bar starts high */
        const int has_outside = kept < C;
        if (has_outside)
            for (int64_t j = 0; j < kept; j++) in_pool[ix[j]] = 1;
        double total = 0.0;
        for (int64_t b = 0; b < B; b++) {
            int64_t filled = 0;
            const uint64_t tagged = (uint64_t)n | SPARSE_TAG;
            /* Slot s + q L + i gets the normal of word q of counter s / 4 + i, L the
             * lanes of its block: LANES, or fewer (a multiple of 8) in a last block
             * that needs fewer. The first k slots hold the k best scores (selected per
             * row), so once they are in, most other candidates fall below the bar: a
             * vector compare per 16 slots, against the bar as it rises, finds the few
             * to offer. */
            for (int64_t s = 0; s < cand; s += 4 * LANES) {
                uint32_t group[LANES];
                float z[4 * LANES];
                TYPE p[4 * LANES + 16];
                const int64_t n_slots = cand - s < 4 * LANES ? cand - s : 4 * LANES;
                const int lanes = (int)((n_slots + 31) / 32 * 8);
                for (int i = 0; i < lanes; i++) group[i] = (uint32_t)(s / 4 + i);
                normal_lanes(seed, group, (uint32_t)b, tagged, lanes, z);
                for (int64_t j = 0; j < n_slots; j++) p[j] = v[s + j] + (TYPE)eps * (TYPE)z[j];
                for (int t = 0; t < 16; t++) p[n_slots + t] = 0; /* read, then masked off */
                int64_t j = 0;
                if (filled == 0 && n_slots >= k)
                    j = NAME(fill)(topv, topi, &filled, k, p, ix + s);
                for (; filled < k && j < n_slots; j++)
                    NAME(offer)(topv, topi, &filled, k, p[j], ix[s + j]);
                for (; j < n_slots; j += 16) {
                    uint64_t word[2];
                    NAME(flags16)(p + j, topv[k - 1], word);
                    for (int half = 0; half < 2 && j + 8 * half < n_slots; half++) {
                        const int64_t left = n_slots - j - 8 * half;
                        if (left < 8) /* slots past n_slots: off */
                            word[half] &= (1ULL << (8 * left)) - 1;
                        for (; word[half]; word[half] &= word[half] - 1) { /* lowest first */
                            const int64_t t = j + 8 * half + (__builtin_ctzll(word[half]) >> 3);
                            NAME(offer)(topv, topi, &filled, k, p[t], ix[s + t]);
                        }
                    }
                }
            }
            const double u = (double)topv[k - 1];
            uniform_stream stream = uniforms_of(seed, tagged, (uint32_t)b);
            for (int64_t t = 0; t + 1 < n_edges; t++)
                NAME(propose)(v + edge[t], ix + edge[t], edge[t + 1] - edge[t], NULL,
                              (double)tier_top[t], u, eps, &stream, topv, topi, &filled, k);
            if (has_outside)
                NAME(propose)(row, NULL, C, in_pool, (double)outside, u, eps, &stream, topv,
                              topi, &filled, k);
            total += (double)topv[k - 1];
            indices[n * B + b] = topi[k - 1];
        }
        if (has_outside)
            for (int64_t j = 0; j < kept; j++) in_pool[ix[j]] = 0;
        values[n] = (TYPE)(total / (double)B);
    }
    free(v);
    free(group_max);
    free(ix);
    free(in_pool);
    return status;
}

#endif /* SKTOPK_TYPED_PART */
