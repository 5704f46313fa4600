// A vaelab metric plugin in C++: `gradient_mse_cpp`, the mean squared difference between the
// horizontal and vertical forward differences of the model's images and of the references (an
// edge-sensitive error: a blurred reconstruction scores worse than its MSE suggests). The entry
// points have C linkage; C++ exceptions never cross them (each is caught into the error buffer).
//
//   c++ -std=c++17 -O2 -shared -fPIC -I plugins/abi/include -o libmetric_cpp_example.so \
//       plugins/metric-cpp-example/src/metric_cpp_example.cpp

#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "vaelab_plugin.h"

namespace {

// One image plane's forward differences (x then y), row-major.
std::vector<double> differences(const float *plane, size_t h, size_t w) {
    std::vector<double> d;
    d.reserve(2 * h * w);
    for (size_t y = 0; y < h; y++)
        for (size_t x = 0; x + 1 < w; x++) d.push_back(double(plane[y * w + x + 1]) - plane[y * w + x]);
    for (size_t y = 0; y + 1 < h; y++)
        for (size_t x = 0; x < w; x++) d.push_back(double(plane[(y + 1) * w + x]) - plane[y * w + x]);
    return d;
}

double gradient_mse(const VaelabImages &real, const VaelabImages &fake) {
    if (real.n != fake.n || real.c != fake.c || real.h != fake.h || real.w != fake.w)
        throw std::invalid_argument("real and fake batches differ in shape");
    if (fake.h < 2 || fake.w < 2) throw std::invalid_argument("images need at least 2x2 pixels");
    const size_t plane = fake.h * fake.w;
    double sum = 0;
    size_t count = 0;
    for (size_t p = 0; p < fake.n * fake.c; p++) {
        std::vector<double> a = differences(real.data + p * plane, fake.h, fake.w);
        std::vector<double> b = differences(fake.data + p * plane, fake.h, fake.w);
        for (size_t i = 0; i < a.size(); i++) sum += (a[i] - b[i]) * (a[i] - b[i]);
        count += a.size();
    }
    return sum / double(count);
}

// Runs `f`, turning any C++ exception into VAELAB_ERROR and a message.
template <typename F> int32_t guarded(char *err, size_t err_len, F f) {
    try {
        f();
        return VAELAB_OK;
    } catch (const std::exception &e) {
        std::snprintf(err, err_len, "%s", e.what());
    } catch (...) {
        std::snprintf(err, err_len, "unknown C++ exception");
    }
    return VAELAB_ERROR;
}

int32_t create(const VaelabConfig *config, void **ctx, char *err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (config->len > 0) throw std::invalid_argument(std::string("no configuration expected, got `") + config->items[0].key + "`");
        *ctx = nullptr;
    });
}

int32_t compute(void *, const VaelabImages *real, const VaelabImages *fake, double *out, char *err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (real == nullptr) throw std::invalid_argument("gradient_mse_cpp needs reference images");
        out[0] = gradient_mse(*real, *fake);
    });
}

void destroy(void *) {}

const char *const outputs[] = {"value"};

const VaelabMetric metric = {
    sizeof(VaelabMetric),
    "gradient_mse_cpp",
    1,
    outputs,
    VAELAB_METRIC_THREAD_SAFE | VAELAB_METRIC_NEEDS_REFERENCE,
    create,
    compute,
    destroy,
    "mean over images of the squared difference between the horizontal and vertical forward differences "
    "of model output and reference (edge-sensitive MSE), per batch",
};

const VaelabMetric *const metrics[] = {&metric};

const VaelabPlugin plugin = {sizeof(VaelabPlugin), VAELAB_ABI_VERSION, "metric-cpp-example", 1, metrics, 0, nullptr};

}  // namespace

extern "C" {
uint32_t vaelab_plugin_abi_version(void) { return VAELAB_ABI_VERSION; }
const VaelabPlugin *vaelab_plugin(void) { return &plugin; }
}
