/* Fused CPU kernels for the study's two pooling blocks: a 3x3 convolution (padding 1) followed
 * by a 2x2 max-pool, for conv1 (one input channel, eight output channels per model) and conv2
 * (eight input channels, sixteen output channels per model); and a stand-alone 2x2 max-pool
 * that remembers which of the four inputs won.
 *
 * Why: on a CPU these blocks are bound by memory and by the library's handling of narrow
 * groups, not by arithmetic. Done by separate library calls, a block's full-size output is
 * written, read by the pool, and its gradient is zero-filled, scattered into and read again.
 * Here each 2x2 window is computed, pooled and forgotten in registers, and the backward pass
 * reads only the pooled gradient and sends it to the product that won its window.
 *
 * Layouts are channels-last throughout. Every function splits the batch into `parts`
 * contiguous slices of ceil(B / parts) images, one OpenMP thread each. OpenMP, not threads of
 * the caller's, because PyTorch's own operations run on the same OpenMP runtime: its idle
 * threads are the ones doing this work instead of spinning beside it. Backward passes write one
 * partial weight and bias gradient per slice (a slice with no images writes zeros), which the
 * caller adds in a fixed order, so no result depends on thread timing.
 *
 * Ties and NaN follow torch.nn.functional.max_pool2d: the window is scanned row by row, and a
 * later value wins only if it is greater or NaN. A "phase" is the winner's place in its window:
 * 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.
 */
#include <stdint.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));
typedef uint8_t v8b __attribute__((vector_size(8), aligned(1)));
typedef float v16f __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64), aligned(4)));
typedef uint8_t v16b __attribute__((vector_size(16), aligned(1)));

/* The images of slice k: [*b0, *b1). */
static inline void slice(int64_t k, int64_t parts, int64_t B, int64_t *b0, int64_t *b1) {
    const int64_t size = (B + parts - 1) / parts;
    *b0 = k * size < B ? k * size : B;
    *b1 = *b0 + size < B ? *b0 + size : B;
}

/* Place p of a 2x2 window reads the 4x4 patch under it at row p/2 + ky, column p%2 + kx. */
#define ROW(p, t) ((p) / 2 + (t) / 3)
#define COL(p, t) ((p) % 2 + (t) % 3)

/* Pools a window's four product vectors `sums` into *out and writes each lane's winning place
 * to *won. VF, VI, VB: the float, int32 and uint8 vector types of one width. */
#define POOL_WINDOW(VF, VI, VB, sums, out, won)                                   \
    do {                                                                          \
        VF best_ = (sums)[0];                                                     \
        VI winner_ = {0};                                                         \
        for (int p_ = 1; p_ < 4; p_++) {                                          \
            const VI take_ = ((sums)[p_] > best_) | ((sums)[p_] != (sums)[p_]);   \
            best_ = (VF)((take_ & (VI)(sums)[p_]) | (~take_ & (VI)best_));        \
            winner_ = (take_ & p_) | (~take_ & winner_);                          \
        }                                                                         \
        *(VF *)(out) = best_;                                                     \
        *(VB *)(won) = __builtin_convertvector(winner_, VB);                      \
    } while (0)

/* ------------------------------------------------------------------------------------------
 * conv1 + pool: one input channel, K1 = 8 output channels per model (one vector of 8 floats)
 */
#define K1 8

/* The 4x4 patch of padded input under pooled output (i, j): rows 2i .. 2i+3 of the padded
 * image hold input rows 2i-1 .. 2i+2, all that the window's four 3x3 products read. */
static inline void patch(const float *restrict padded, int64_t b, int64_t i, int64_t j,
                         int64_t g, int64_t Hp, int64_t Wp, int64_t G, float v[4][4]) {
    for (int r = 0; r < 4; r++)
        for (int s = 0; s < 4; s++)
            v[r][s] = padded[((b * Hp + 2 * i + r) * Wp + 2 * j + s) * G + g];
}

/* padded [B, H+2, W+2, G] images with a zero border; weight [9, G*K1] tap-major
 * (tap = 3*ky+kx); bias [G*K1]. Writes pooled [B, H/2, W/2, G*K1] pre-activations and phase
 * (same shape). */
void conv_pool_forward(const float *restrict padded, const float *restrict weight,
                       const float *restrict bias, float *restrict pooled,
                       uint8_t *restrict phase, int64_t B, int64_t H, int64_t W, int64_t G,
                       int64_t parts) {
    const int64_t C = G * K1, Ho = H / 2, Wo = W / 2, Hp = H + 2, Wp = W + 2;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        slice(k, parts, B, &b0, &b1);
        for (int64_t b = b0; b < b1; b++)
            for (int64_t i = 0; i < Ho; i++)
                for (int64_t j = 0; j < Wo; j++)
                    for (int64_t g = 0; g < G; g++) {
                        float v[4][4];
                        patch(padded, b, i, j, g, Hp, Wp, G, v);
                        const v8f start = *(const v8f *)(bias + g * K1);
                        v8f sums[4] = {start, start, start, start};
                        for (int t = 0; t < 9; t++) {
                            const v8f w = *(const v8f *)(weight + t * C + g * K1);
                            for (int p = 0; p < 4; p++) sums[p] += w * v[ROW(p, t)][COL(p, t)];
                        }
                        const int64_t at = ((b * Ho + i) * Wo + j) * C + g * K1;
                        POOL_WINDOW(v8f, v8i, v8b, sums, pooled + at, phase + at);
                    }
    }
}

/* grad [B, H/2, W/2, G*K1]: the gradient of the pooled pre-activations. Writes slice k's
 * weight gradient [9, G*K1] and bias gradient [G*K1] at weight_grad + k*9*G*K1 and
 * bias_grad + k*G*K1: each pooled gradient flows to the one product that won its window. */
void conv_pool_backward(const float *restrict padded, const float *restrict grad,
                        const uint8_t *restrict phase, float *restrict weight_grad,
                        float *restrict bias_grad, int64_t B, int64_t H, int64_t W, int64_t G,
                        int64_t parts) {
    const int64_t C = G * K1, Ho = H / 2, Wo = W / 2, Hp = H + 2, Wp = W + 2;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        slice(k, parts, B, &b0, &b1);
        for (int64_t g = 0; g < G; g++) {
            v8f bias_sum = {0, 0, 0, 0, 0, 0, 0, 0};
            v8f weight_sum[9];
            for (int t = 0; t < 9; t++) weight_sum[t] = bias_sum;
            for (int64_t b = b0; b < b1; b++)
                for (int64_t i = 0; i < Ho; i++)
                    for (int64_t j = 0; j < Wo; j++) {
                        const int64_t at = ((b * Ho + i) * Wo + j) * C + g * K1;
                        const v8f upstream = *(const v8f *)(grad + at);
                        const v8i won = __builtin_convertvector(*(const v8b *)(phase + at), v8i);
                        float v[4][4];
                        patch(padded, b, i, j, g, Hp, Wp, G, v);
                        bias_sum += upstream;
                        for (int p = 0; p < 4; p++) {
                            const v8f share = (v8f)((won == p) & (v8i)upstream);
                            for (int t = 0; t < 9; t++)
                                weight_sum[t] += share * v[ROW(p, t)][COL(p, t)];
                        }
                    }
            float *weight_out = weight_grad + k * 9 * C, *bias_out = bias_grad + k * C;
            for (int t = 0; t < 9; t++) *(v8f *)(weight_out + t * C + g * K1) = weight_sum[t];
            *(v8f *)(bias_out + g * K1) = bias_sum;
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * conv2 + pool: N2 = 8 input channels, K2 = 16 output channels per model (one vector of 16)
 */
#define N2 8
#define K2 16

/* padded [B, H+2, W+2, G*N2] with a zero border; weight [G, 9, N2, K2] (tap, input channel,
 * output channel); bias [G*K2]. Writes pooled [B, H/2, W/2, G*K2] pre-activations and phase. */
void conv8_pool_forward(const float *restrict padded, const float *restrict weight,
                        const float *restrict bias, float *restrict pooled,
                        uint8_t *restrict phase, int64_t B, int64_t H, int64_t W, int64_t G,
                        int64_t parts) {
    const int64_t CI = G * N2, CO = G * K2, Ho = H / 2, Wo = W / 2, Hp = H + 2, Wp = W + 2;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        slice(k, parts, B, &b0, &b1);
        for (int64_t b = b0; b < b1; b++)
            for (int64_t i = 0; i < Ho; i++)
                for (int64_t j = 0; j < Wo; j++)
                    for (int64_t g = 0; g < G; g++) {
                        const float *corner = padded + ((b * Hp + 2 * i) * Wp + 2 * j) * CI + g * N2;
                        const float *taps = weight + g * 9 * N2 * K2;
                        const v16f start = *(const v16f *)(bias + g * K2);
                        v16f sums[4] = {start, start, start, start};
                        for (int t = 0; t < 9; t++)
                            for (int c = 0; c < N2; c++) {
                                const v16f w = *(const v16f *)(taps + (t * N2 + c) * K2);
                                for (int p = 0; p < 4; p++)
                                    sums[p] += w * corner[(ROW(p, t) * Wp + COL(p, t)) * CI + c];
                            }
                        const int64_t at = ((b * Ho + i) * Wo + j) * CO + g * K2;
                        POOL_WINDOW(v16f, v16i, v16b, sums, pooled + at, phase + at);
                    }
    }
}

/* grad [B, H/2, W/2, G*K2]: the gradient of the pooled pre-activations; weight_t [G, 9, K2, N2]
 * (tap, output channel, input channel). Writes grad_input [B, H, W, G*N2], every element once,
 * and slice k's weight gradient [G, 9, K2, N2] and bias gradient [G*K2] at
 * weight_grad + k*G*9*K2*N2 and bias_grad + k*G*K2. Each output channel's pooled gradient
 * flows only through the product that won its window: a quarter of a dense backward pass.
 *
 * One output channel at a time over one image, so that its nine weight vectors and their nine
 * gradient sums stay in registers; the image's input and input gradient stay in L1. */
void conv8_pool_backward(const float *restrict padded, const float *restrict grad,
                         const uint8_t *restrict phase, const float *restrict weight_t,
                         float *restrict grad_input, float *restrict weight_grad,
                         float *restrict bias_grad, int64_t B, int64_t H, int64_t W, int64_t G,
                         int64_t parts) {
    const int64_t CI = G * N2, CO = G * K2, Ho = H / 2, Wo = W / 2, Hp = H + 2, Wp = W + 2;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        slice(k, parts, B, &b0, &b1);
        v8f sink[Hp * Wp]; /* one image's input gradient for one model, with the border */
        for (int64_t g = 0; g < G; g++) {
            float *weight_out = weight_grad + (k * G + g) * 9 * K2 * N2;
            memset(weight_out, 0, 9 * K2 * N2 * sizeof(float));
            v16f bias_sum = {0};
            for (int64_t b = b0; b < b1; b++) {
                const float *image = padded + b * Hp * Wp * CI + g * N2;
                memset(sink, 0, sizeof sink);
                for (int o = 0; o < K2; o++) {
                    v8f taps[9], sums[9];
                    for (int t = 0; t < 9; t++) {
                        taps[t] = *(const v8f *)(weight_t + ((g * 9 + t) * K2 + o) * N2);
                        sums[t] = (v8f){0};
                    }
                    for (int64_t i = 0; i < Ho; i++)
                        for (int64_t j = 0; j < Wo; j++) {
                            const int64_t at = ((b * Ho + i) * Wo + j) * CO + g * K2 + o;
                            const float share = grad[at];
                            const int p = phase[at];
                            const int64_t corner = (2 * i + p / 2) * Wp + 2 * j + p % 2;
                            for (int t = 0; t < 9; t++) {
                                const int64_t place = corner + (t / 3) * Wp + t % 3;
                                sums[t] += *(const v8f *)(image + place * CI) * share;
                                sink[place] += taps[t] * share;
                            }
                        }
                    for (int t = 0; t < 9; t++) *(v8f *)(weight_out + (t * K2 + o) * N2) += sums[t];
                }
                for (int64_t i = 0; i < Ho; i++)
                    for (int64_t j = 0; j < Wo; j++)
                        bias_sum += *(const v16f *)(grad + ((b * Ho + i) * Wo + j) * CO + g * K2);
                for (int64_t y = 0; y < H; y++)
                    for (int64_t x = 0; x < W; x++)
                        *(v8f *)(grad_input + ((b * H + y) * W + x) * CI + g * N2) =
                            sink[(y + 1) * Wp + x + 1];
            }
            *(v16f *)(bias_grad + k * CO + g * K2) = bias_sum;
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * 2x2 max-pool
 */

/* x [B, H, W, C] -> pooled [B, H/2, W/2, C] and phase (same shape). */
void max_pool_forward(const float *restrict x, float *restrict pooled, uint8_t *restrict phase,
                      int64_t B, int64_t H, int64_t W, int64_t C, int64_t parts) {
    const int64_t Ho = H / 2, Wo = W / 2;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        slice(k, parts, B, &b0, &b1);
        for (int64_t b = b0; b < b1; b++)
            for (int64_t i = 0; i < Ho; i++)
                for (int64_t j = 0; j < Wo; j++) {
                    const float *corner[4];
                    for (int p = 0; p < 4; p++)
                        corner[p] = x + ((b * H + 2 * i + p / 2) * W + 2 * j + p % 2) * C;
                    const int64_t at = ((b * Ho + i) * Wo + j) * C;
                    for (int64_t c = 0; c < C; c++) {
                        float best = corner[0][c];
                        uint8_t winner = 0;
                        for (int p = 1; p < 4; p++) {
                            const float value = corner[p][c];
                            const int take = (value > best) | (value != value);
                            best = take ? value : best;
                            winner = take ? (uint8_t)p : winner;
                        }
                        pooled[at + c] = best;
                        phase[at + c] = winner;
                    }
                }
    }
}

/* grad [B, H/2, W/2, C] -> grad_input [B, H, W, C], every element of the pooled windows
 * written once: the pooled gradient where its window's winner was, zero elsewhere. */
void max_pool_backward(const float *restrict grad, const uint8_t *restrict phase,
                       float *restrict grad_input, int64_t B, int64_t H, int64_t W, int64_t C,
                       int64_t parts) {
    const int64_t Ho = H / 2, Wo = W / 2;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        slice(k, parts, B, &b0, &b1);
        for (int64_t b = b0; b < b1; b++)
            for (int64_t i = 0; i < Ho; i++)
                for (int64_t j = 0; j < Wo; j++) {
                    const int64_t at = ((b * Ho + i) * Wo + j) * C;
                    for (int p = 0; p < 4; p++) {
                        float *out =
                            grad_input + ((b * H + 2 * i + p / 2) * W + 2 * j + p % 2) * C;
                        for (int64_t c = 0; c < C; c++)
                            out[c] = phase[at + c] == p ? grad[at + c] : 0.0f;
                    }
                }
    }
}
