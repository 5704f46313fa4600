/* vaelab plugin ABI, version 1 — the C view of crate `vaelab-plugin-abi` (plugins/abi/src/lib.rs).
 *
 * A plugin is a shared library exporting:
 *   uint32_t vaelab_plugin_abi_version(void);   returns VAELAB_ABI_VERSION
 *   const VaelabPlugin *vaelab_plugin(void);    returns the plugin's table
 *
 * Rules (see plugins/README.md for the full contract):
 * - Every table begins with its own size (sizeof as compiled); fields are only ever appended.
 * - Whoever allocates a buffer frees it. Images, configs, parameter and error buffers belong to the
 *   host and live for the call only. Contexts belong to the plugin and are freed by its destroy().
 *   Strings in tables must live as long as the library; vaelab never unloads a library.
 * - Functions return VAELAB_OK or VAELAB_ERROR; on error, write a NUL-terminated message of at most
 *   err_len bytes (including the NUL) into err.
 *
 * A test compiles this header and checks every offset and size against the Rust definitions. */
#ifndef VAELAB_PLUGIN_H
#define VAELAB_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VAELAB_ABI_VERSION 1u

#define VAELAB_OK 0
#define VAELAB_ERROR 1

#define VAELAB_METRIC_HIGHER_IS_BETTER 1u /* unset: smaller is better */
#define VAELAB_METRIC_THREAD_SAFE 2u      /* compute() may run on several threads at once */
#define VAELAB_METRIC_NEEDS_REFERENCE 4u  /* unset: reference-free, real is NULL */
#define VAELAB_METRIC_WHOLE_SET 8u        /* one call on all images instead of one per batch */

#define VAELAB_BLOCK_TRAINING 1u /* forward_ex flag: part of a training step (unset in evaluation) */

#define VAELAB_INIT_ZEROS 0u
#define VAELAB_INIT_ONES 1u
#define VAELAB_INIT_UNIFORM 2u        /* U(-a, a), a = init_arg */
#define VAELAB_INIT_FAN_IN_UNIFORM 3u /* U(-b, b), b = 1/sqrt(init_arg) */

#define VAELAB_NAME_LEN 64
#define VAELAB_MAX_RANK 4

/* One `key: value` of a spec configuration; values are RON text: 32, 0.5, true, "text", [1, 2]. */
typedef struct VaelabKeyValue {
    const char *key;
    const char *value;
} VaelabKeyValue;

typedef struct VaelabConfig {
    size_t len;
    const VaelabKeyValue *items;
} VaelabConfig;

/* A contiguous N x C x H x W batch of floats in [0, 1]. */
typedef struct VaelabImages {
    size_t n;
    size_t c;
    size_t h;
    size_t w;
    uint32_t bit_depth; /* bits per sample of the original files */
    const float *data;
} VaelabImages;

/* rank 1: (features); rank 3: (channels, height, width); parameters: rank 1..4. Unused dims are 0. */
typedef struct VaelabShape {
    size_t rank;
    size_t dims[VAELAB_MAX_RANK];
} VaelabShape;

typedef struct VaelabParamDecl {
    char name[VAELAB_NAME_LEN]; /* letters, digits and _ */
    VaelabShape shape;
    uint32_t init; /* VAELAB_INIT_* */
    float init_arg;
} VaelabParamDecl;

typedef struct VaelabMetric {
    size_t size; /* sizeof(VaelabMetric) */
    const char *name;
    size_t n_outputs;
    const char *const *output_names;
    uint32_t flags; /* VAELAB_METRIC_* */
    int32_t (*create)(const VaelabConfig *config, void **ctx, char *err, size_t err_len);
    int32_t (*compute)(void *ctx, const VaelabImages *real, const VaelabImages *fake, double *out, char *err,
                       size_t err_len);
    void (*destroy)(void *ctx);
    /* ---- Appended within ABI 1: vaelab reads these only when `size` covers them, so plugins built
       against an older header (smaller tables) keep working. */
    const char *definition; /* one line saying what the metric computes, for metrics.json; NULL: none */
} VaelabMetric;

/* Buffers are batch x example, each example row-major in its shape (N x C x H x W for images).
 * backward() overwrites dx and every dparams[i]. Calls on one context come from one thread at a time. */
typedef struct VaelabBlock {
    size_t size; /* sizeof(VaelabBlock) */
    const char *name;
    int32_t (*create)(const VaelabConfig *config, const VaelabShape *input, VaelabShape *output, void **ctx, char *err,
                      size_t err_len);
    size_t (*param_count)(void *ctx);
    int32_t (*param_decl)(void *ctx, size_t index, VaelabParamDecl *decl);
    int32_t (*forward)(void *ctx, size_t batch, const float *x, const float *const *params, float *y, char *err,
                       size_t err_len);
    int32_t (*backward)(void *ctx, size_t batch, const float *x, const float *const *params, const float *dy,
                        float *dx, float *const *dparams, char *err, size_t err_len);
    void (*destroy)(void *ctx);
    /* ---- Appended within ABI 1 (read only when `size` covers them; preferred when non-NULL). */
    /* param_decl with an error buffer for the reason a declaration cannot be given */
    int32_t (*param_decl_ex)(void *ctx, size_t index, VaelabParamDecl *decl, char *err, size_t err_len);
    /* forward told whether this is a training step: flags & VAELAB_BLOCK_TRAINING */
    int32_t (*forward_ex)(void *ctx, size_t batch, const float *x, const float *const *params, float *y, uint32_t flags,
                          char *err, size_t err_len);
} VaelabBlock;

typedef struct VaelabPlugin {
    size_t size; /* sizeof(VaelabPlugin) */
    uint32_t abi_version;
    const char *name;
    size_t n_metrics;
    const VaelabMetric *const *metrics;
    size_t n_blocks;
    const VaelabBlock *const *blocks;
} VaelabPlugin;

#ifdef __cplusplus
}
#endif

#endif /* VAELAB_PLUGIN_H */
