/* A vaelab metric plugin in plain C: two metrics in one library.
 *   psnr_c  mean over images of 10*log10(1/MSE), data range [0, 1], capped at 100 dB
 *   mae_c   mean absolute error over all pixels
 * Build:  cc -O2 -shared -fPIC -I plugins/abi/include -o libmetric_c_example.so metric_c_example.c -lm
 * Check:  vaelab plugins list ./libmetric_c_example.so */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "vaelab_plugin.h"

/* Contexts hold per-metric settings; these metrics have none, so a static byte will do. */
static char no_state;

static int32_t create_no_config(const VaelabConfig *config, void **ctx, char *err, size_t err_len) {
    if (config != NULL && config->len > 0) {
        snprintf(err, err_len, "this metric takes no configuration, got `%s`", config->items[0].key);
        return VAELAB_ERROR;
    }
    *ctx = &no_state;
    return VAELAB_OK;
}

static void destroy_nothing(void *ctx) { (void)ctx; }

/* Both metrics compare equally sized batches. */
static int32_t check_pair(const VaelabImages *real, const VaelabImages *fake, char *err, size_t err_len) {
    if (real == NULL) {
        snprintf(err, err_len, "reference images are required");
        return VAELAB_ERROR;
    }
    if (real->n != fake->n || real->c != fake->c || real->h != fake->h || real->w != fake->w) {
        snprintf(err, err_len, "batches differ in shape");
        return VAELAB_ERROR;
    }
    if (real->n == 0) {
        snprintf(err, err_len, "no images");
        return VAELAB_ERROR;
    }
    return VAELAB_OK;
}

static int32_t psnr_compute(void *ctx, const VaelabImages *real, const VaelabImages *fake, double *out, char *err,
                            size_t err_len) {
    (void)ctx;
    if (check_pair(real, fake, err, err_len) != VAELAB_OK) return VAELAB_ERROR;
    size_t len = fake->c * fake->h * fake->w;
    double total = 0.0;
    for (size_t i = 0; i < fake->n; i++) {
        double sq = 0.0;
        for (size_t j = 0; j < len; j++) {
            double d = (double)real->data[i * len + j] - (double)fake->data[i * len + j];
            sq += d * d;
        }
        double mse = sq / (double)len;
        double db = mse == 0.0 ? 100.0 : 10.0 * log10(1.0 / mse);
        total += db < 100.0 ? db : 100.0;
    }
    out[0] = total / (double)fake->n;
    return VAELAB_OK;
}

static int32_t mae_compute(void *ctx, const VaelabImages *real, const VaelabImages *fake, double *out, char *err,
                           size_t err_len) {
    (void)ctx;
    if (check_pair(real, fake, err, err_len) != VAELAB_OK) return VAELAB_ERROR;
    size_t count = fake->n * fake->c * fake->h * fake->w;
    double total = 0.0;
    for (size_t j = 0; j < count; j++) total += fabs((double)real->data[j] - (double)fake->data[j]);
    out[0] = total / (double)count;
    return VAELAB_OK;
}

static const char *const psnr_outputs[] = {"psnr"};
static const char *const mae_outputs[] = {"mae"};

static const VaelabMetric psnr_metric = {
    sizeof(VaelabMetric), "psnr_c", 1, psnr_outputs,
    VAELAB_METRIC_HIGHER_IS_BETTER | VAELAB_METRIC_THREAD_SAFE | VAELAB_METRIC_NEEDS_REFERENCE,
    create_no_config, psnr_compute, destroy_nothing,
    "10 log10(1 / MSE) in dB, MSE over every pixel of each batch, averaged over batches by image count",
};

static const VaelabMetric mae_metric = {
    sizeof(VaelabMetric), "mae_c", 1, mae_outputs,
    VAELAB_METRIC_THREAD_SAFE | VAELAB_METRIC_NEEDS_REFERENCE,
    create_no_config, mae_compute, destroy_nothing,
};

static const VaelabMetric *const metrics[] = {&psnr_metric, &mae_metric};

static const VaelabPlugin plugin = {
    sizeof(VaelabPlugin), VAELAB_ABI_VERSION, "metric-c-example", 2, metrics, 0, NULL,
};

uint32_t vaelab_plugin_abi_version(void) { return VAELAB_ABI_VERSION; }

const VaelabPlugin *vaelab_plugin(void) { return &plugin; }
