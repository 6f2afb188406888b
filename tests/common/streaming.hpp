// For the streaming-store tests: a 64-byte aligned float buffer (vector-aligned on every target, so
// the kernels stream into it), and kernels::streaming_threshold set to 0 for one scope.
#pragma once
#include <cstddef>
#include <memory>
#include <new>

#include "qcast/kernels.hpp"

namespace qcast_test {

class AlignedFloats {
 public:
  explicit AlignedFloats(std::size_t n)
      : data_(static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t{64}))) {}
  float* get() const { return data_.get(); }

 private:
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<float[], Free> data_;
};

// Streams every cast and decode while it lives; restores the threshold it found.
class StreamEveryOutput {
 public:
  StreamEveryOutput() : saved_(qcast::kernels::streaming_threshold()) { qcast::kernels::set_streaming_threshold(0); }
  ~StreamEveryOutput() { qcast::kernels::set_streaming_threshold(saved_); }
  StreamEveryOutput(const StreamEveryOutput&) = delete;
  StreamEveryOutput& operator=(const StreamEveryOutput&) = delete;

 private:
  std::size_t saved_;
};

}  // namespace qcast_test
