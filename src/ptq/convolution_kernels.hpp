// Which kernel ATen's CPU convolutions take during a PTQ run. Internal to src/ptq and its tests.
//
// ATen picks a CPU convolution's kernel by its shape, the batch size and the thread count. At one
// thread (as the engine runs its stages) a 1x1 convolution takes im2col with one matrix product per
// sample below 16 samples and oneDNN from 16 on, other convolutions take oneDNN, and with oneDNN off
// NNPACK takes over from 16 samples (measured with LibTorch 2.11). The kernels add the bias and sum
// the products in other orders, so the activations differ in their last bits, and a per-layer fit
// carries that on (issue 23: PP-OCR int4@g128 ED moved by 21-54 characters between batch 8 and
// 16). With oneDNN and NNPACK off every convolution takes the per-sample kernel, whose result for
// one sample is the same in any batch and on any thread. The flags are ATen's global ones: restored
// on exit, but seen meanwhile by the process's other threads.
#pragma once
#include <ATen/Context.h>

namespace qcast::ptq::detail {

class PerSampleConvolutions {
 public:
  explicit PerSampleConvolutions(bool active = true)
      : active_(active), mkldnn_(at::globalContext().userEnabledMkldnn()), nnpack_(at::globalContext().userEnabledNNPACK()) {
    if (!active_) return;
    at::globalContext().setUserEnabledMkldnn(false);
    at::globalContext().setUserEnabledNNPACK(false);
  }
  ~PerSampleConvolutions() {
    if (!active_) return;
    at::globalContext().setUserEnabledMkldnn(mkldnn_);
    at::globalContext().setUserEnabledNNPACK(nnpack_);
  }
  PerSampleConvolutions(const PerSampleConvolutions&) = delete;
  PerSampleConvolutions& operator=(const PerSampleConvolutions&) = delete;

 private:
  bool active_, mkldnn_, nnpack_;
};

}  // namespace qcast::ptq::detail
