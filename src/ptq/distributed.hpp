// One rank of a calibration split across processes (docs/ptq.md "Calibration across processes"):
// the c10d process group (TCPStore + ProcessGroupGloo from LibTorch) and the few collectives the
// engine needs, each named by what it reduces so that a failure says where the ranks were. Internal
// to src/ptq; the only translation unit that includes c10d.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qcast/ptq/engine.hpp"

namespace qcast::ptq::detail {

class Collective {
 public:
  // Joins the group: rank 0 hosts the TCPStore at host:port, every rank waits for all (up to the
  // timeout). std::runtime_error with the reason (port in use, store unreachable, world sizes that
  // differ, a build without Gloo).
  static std::unique_ptr<Collective> join(const DistributedOptions& o);
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Element-wise sums / maxima over the ranks, in place (CPU tensors; float64 sums). `what` names
  // the step for the error a failed or timed-out collective raises.
  virtual void sum(std::vector<at::Tensor>& tensors, const std::string& what) = 0;
  virtual void max(std::vector<at::Tensor>& tensors, const std::string& what) = 0;
  // Every rank's value, in rank order.
  virtual std::vector<std::int64_t> gather(std::int64_t value, const std::string& what) = 0;
  // The bytes the collectives carried from this rank so far (for the report and the benchmark).
  virtual std::int64_t bytes() const = 0;
};

// The contiguous share of `batches` that rank r of n takes: [r·B/n, (r+1)·B/n).
std::pair<std::size_t, std::size_t> batch_share(std::size_t batches, int rank, int world_size);

}  // namespace qcast::ptq::detail
