/* Fused CPU kernels for the study's first block: 3x3 convolution (one input channel, eight
 * output channels per model, padding 1) followed by a 2x2 max-pool, and a stand-alone 2x2
 * max-pool that remembers which of the four inputs won.
 *
 * Why: on a CPU the first block is bound by memory, not arithmetic. Done by separate library
 * calls, its full-size output (8 maps of 28x28 per image and model) is written, read by the
 * pool, and its gradient is zero-filled, scattered into and read again: five passes over the
 * largest tensors of the step for 0.5% of its arithmetic. Here the 2x2 window is computed,
 * pooled and forgotten in registers, and the backward pass reads only the pooled gradient.
 *
 * Layouts are channels-last throughout; every function handles images b0 .. b1-1 so that
 * callers can split a batch across threads. Ties and NaN follow torch.nn.functional.max_pool2d:
 * the window is scanned row by row, and a later value wins only if it is greater or NaN.
 * A "phase" is the winner's place in its window: 0 top-left, 1 top-right, 2 bottom-left,
 * 3 bottom-right.
 */
#include <stdint.h>

#define K 8 /* output channels per model in the first block: one vector of 8 floats */
typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));
typedef uint8_t v8b __attribute__((vector_size(8), aligned(1)));

static inline v8f select8(v8i mask, v8f when_set, v8f otherwise) {
    return (v8f)((mask & (v8i)when_set) | (~mask & (v8i)otherwise));
}

/* The 4x4 patch of padded input under pooled output (i, j): rows 2i .. 2i+3 of the padded
 * image hold input rows 2i-1 .. 2i+2, all that the window's four 3x3 products read. */
static inline void patch(const float *restrict padded, int64_t b, int64_t i, int64_t j,
                         int64_t g, int64_t Hp, int64_t Wp, int64_t G, float v[4][4]) {
    for (int r = 0; r < 4; r++)
        for (int s = 0; s < 4; s++)
            v[r][s] = padded[((b * Hp + 2 * i + r) * Wp + 2 * j + s) * G + g];
}

/* padded [B, H+2, W+2, G] images with a zero border; weight [9, G*K] tap-major (tap = 3*ky+kx);
 * bias [G*K]. Writes pooled [B, H/2, W/2, G*K] pre-activations and phase (same shape). */
void conv_pool_forward(const float *restrict padded, const float *restrict weight,
                       const float *restrict bias, float *restrict pooled,
                       uint8_t *restrict phase, int64_t b0, int64_t b1, int64_t H, int64_t W,
                       int64_t G) {
    const int64_t C = G * K, Ho = H / 2, Wo = W / 2, Hp = H + 2, Wp = W + 2;
    for (int64_t b = b0; b < b1; b++)
        for (int64_t i = 0; i < Ho; i++)
            for (int64_t j = 0; j < Wo; j++)
                for (int64_t g = 0; g < G; g++) {
                    float v[4][4];
                    patch(padded, b, i, j, g, Hp, Wp, G, v);
                    const v8f start = *(const v8f *)(bias + g * K);
                    v8f sums[4] = {start, start, start, start};
                    for (int t = 0; t < 9; t++) {
                        const v8f w = *(const v8f *)(weight + t * C + g * K);
                        for (int p = 0; p < 4; p++) sums[p] += w * v[p / 2 + t / 3][p % 2 + t % 3];
                    }
                    v8f best = sums[0];
                    v8i winner = {0, 0, 0, 0, 0, 0, 0, 0};
                    for (int p = 1; p < 4; p++) {
                        const v8i take = (sums[p] > best) | (sums[p] != sums[p]);
                        best = select8(take, sums[p], best);
                        winner = (take & p) | (~take & winner);
                    }
                    const int64_t at = ((b * Ho + i) * Wo + j) * C + g * K;
                    *(v8f *)(pooled + at) = best;
                    *(v8b *)(phase + at) = __builtin_convertvector(winner, v8b);
                }
}

/* grad [B, H/2, W/2, G*K]: the gradient of the pooled pre-activations. Writes the weight
 * gradient [9, G*K] and the bias gradient [G*K] of images b0 .. b1-1: each pooled gradient
 * flows to the one product that won its window. */
void conv_pool_backward(const float *restrict padded, const float *restrict grad,
                        const uint8_t *restrict phase, float *restrict weight_grad,
                        float *restrict bias_grad, int64_t b0, int64_t b1, int64_t H, int64_t W,
                        int64_t G) {
    const int64_t C = G * K, Ho = H / 2, Wo = W / 2, Hp = H + 2, Wp = W + 2;
    for (int64_t g = 0; g < G; g++) {
        v8f bias_sum = {0, 0, 0, 0, 0, 0, 0, 0};
        v8f weight_sum[9];
        for (int t = 0; t < 9; t++) weight_sum[t] = bias_sum;
        for (int64_t b = b0; b < b1; b++)
            for (int64_t i = 0; i < Ho; i++)
                for (int64_t j = 0; j < Wo; j++) {
                    const int64_t at = ((b * Ho + i) * Wo + j) * C + g * K;
                    const v8f upstream = *(const v8f *)(grad + at);
                    const v8i won = __builtin_convertvector(*(const v8b *)(phase + at), v8i);
                    float v[4][4];
                    patch(padded, b, i, j, g, Hp, Wp, G, v);
                    bias_sum += upstream;
                    for (int p = 0; p < 4; p++) {
                        const v8f share = (v8f)((won == p) & (v8i)upstream);
                        for (int t = 0; t < 9; t++)
                            weight_sum[t] += share * v[p / 2 + t / 3][p % 2 + t % 3];
                    }
                }
        for (int t = 0; t < 9; t++) *(v8f *)(weight_grad + t * C + g * K) = weight_sum[t];
        *(v8f *)(bias_grad + g * K) = bias_sum;
    }
}

/* x [B, H, W, C] -> pooled [B, H/2, W/2, C] and phase (same shape). */
void max_pool_forward(const float *restrict x, float *restrict pooled, uint8_t *restrict phase,
                      int64_t b0, int64_t b1, int64_t H, int64_t W, int64_t C) {
    const int64_t Ho = H / 2, Wo = W / 2;
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

/* grad [B, H/2, W/2, C] -> grad_input [B, H, W, C], every element written once: the pooled
 * gradient where its window's winner was, zero elsewhere. */
void max_pool_backward(const float *restrict grad, const uint8_t *restrict phase,
                       float *restrict grad_input, int64_t b0, int64_t b1, int64_t H, int64_t W,
                       int64_t C) {
    const int64_t Ho = H / 2, Wo = W / 2;
    for (int64_t b = b0; b < b1; b++)
        for (int64_t i = 0; i < Ho; i++)
            for (int64_t j = 0; j < Wo; j++) {
                const int64_t at = ((b * Ho + i) * Wo + j) * C;
                for (int p = 0; p < 4; p++) {
                    float *out = grad_input + ((b * H + 2 * i + p / 2) * W + 2 * j + p % 2) * C;
                    for (int64_t c = 0; c < C; c++)
                        out[c] = phase[at + c] == p ? grad[at + c] : 0.0f;
                }
            }
}
