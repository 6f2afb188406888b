// The c10d process group of a distributed calibration (distributed.hpp). Built with Gloo's headers
// (QCAST_HAVE_GLOO, Debian's libgloo-dev: the wheel of LibTorch ships the library, not the
// headers); without them joining a group is an error that says so.
#include "distributed.hpp"

#include <ATen/ATen.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>

#ifdef QCAST_HAVE_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#include "error_text.hpp"

namespace qcast::ptq {

std::optional<DistributedOptions> distributed_from_environment() {
  const char* world = std::getenv("WORLD_SIZE");
  if (!world || !*world) return std::nullopt;
  auto integer = [](const char* name, const char* v, long lo, long hi) {
    char* end = nullptr;
    errno = 0;
    const long x = v ? std::strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi)
      throw std::invalid_argument(std::string("the environment variable ") + name + " must be an integer in " +
                                  std::to_string(lo) + ".." + std::to_string(hi) + ", got '" + (v ? v : "") + "'");
    return int(x);
  };
  DistributedOptions o;
  o.world_size = integer("WORLD_SIZE", world, 1, 1 << 16);
  o.rank = integer("RANK", std::getenv("RANK"), 0, o.world_size - 1);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) o.host = a;
  if (const char* p = std::getenv("MASTER_PORT"); p && *p) o.port = integer("MASTER_PORT", p, 1, 65535);
  return o;
}

}  // namespace qcast::ptq

namespace qcast::ptq::detail {

std::pair<std::size_t, std::size_t> batch_share(std::size_t batches, int rank, int world_size) {
  const std::size_t n = std::size_t(world_size), r = std::size_t(rank);
  return {r * batches / n, (r + 1) * batches / n};
}

#ifdef QCAST_HAVE_GLOO
namespace {

class GlooCollective final : public Collective {
 public:
  GlooCollective(const DistributedOptions& o) : rank_(o.rank), world_(o.world_size) {
    const auto timeout = std::chrono::milliseconds(std::int64_t(o.timeout_s * 1000));
    c10d::TCPStoreOptions so;
    so.port = std::uint16_t(o.port);
    so.isServer = o.rank == 0;
    so.numWorkers = o.world_size;
    so.waitWorkers = true;
    so.timeout = timeout;
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(o.host, so);
    } catch (const std::exception& e) {
      throw std::runtime_error(
          (o.rank == 0 ? "rank 0 could not host the process group's store on port " + std::to_string(o.port) +
                             " (in use? give another --dist-init port)"
                       : "rank " + std::to_string(o.rank) + " could not reach the process group's store at " + o.host + ":" +
                             std::to_string(o.port) + " within " + std::to_string(int(o.timeout_s)) + " s (is rank 0 running?)") +
          ": " + error_summary(e));
    }
    // Every rank says how many ranks it expects; a rank started with another world size is named.
    store_->set("qcast/world/" + std::to_string(rank_), std::vector<std::uint8_t>(1, std::uint8_t(world_)));
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    try {
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("qcast", store_), rank_,
                                                          world_, opts);
    } catch (const std::exception& e) {
      throw std::runtime_error("rank " + std::to_string(rank_) + " could not join the process group of " +
                               std::to_string(world_) + " ranks: " + error_summary(e) + mismatch());
    }
    const std::vector<std::int64_t> worlds = gather(world_, "the world size");
    for (std::size_t r = 0; r < worlds.size(); ++r)
      if (worlds[r] != world_)
        throw std::runtime_error("rank " + std::to_string(r) + " was started with a world size of " + std::to_string(worlds[r]) +
                                 ", rank " + std::to_string(rank_) + " with " + std::to_string(world_));
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  std::int64_t bytes() const override { return bytes_; }

  void sum(std::vector<at::Tensor>& t, const std::string& what) override { reduce(t, c10d::ReduceOp::SUM, what); }
  void max(std::vector<at::Tensor>& t, const std::string& what) override { reduce(t, c10d::ReduceOp::MAX, what); }

  std::vector<std::int64_t> gather(std::int64_t value, const std::string& what) override {
    std::vector<at::Tensor> in = {at::full({1}, value, at::kLong)};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < world_; ++r) out[0].push_back(at::empty({1}, at::kLong));
    run(what, [&] { return group_->allgather(out, in); });
    bytes_ += 8;
    std::vector<std::int64_t> v;
    for (const auto& t : out[0]) v.push_back(t.item<std::int64_t>());
    return v;
  }

 private:
  void reduce(std::vector<at::Tensor>& tensors, c10d::ReduceOp::RedOpType op, const std::string& what) {
    for (auto& t : tensors) {
      if (!t.is_contiguous()) t = t.contiguous();
      bytes_ += std::int64_t(t.numel()) * std::int64_t(t.element_size());
    }
    c10d::AllreduceOptions ao;
    ao.reduceOp = c10d::ReduceOp(op);
    // One tensor per call: Gloo's CPU all-reduce takes a list of tensors of one shape.
    for (auto& t : tensors) {
      std::vector<at::Tensor> one = {t};
      run(what, [&] { return group_->allreduce(one, ao); });
    }
  }

  template <class F>
  void run(const std::string& what, F&& start) {
    // Where this rank is, for the error of a rank that waits on one that is gone or behind.
    try {
      store_->set("qcast/at/" + std::to_string(rank_), std::vector<std::uint8_t>(what.begin(), what.end()));
    } catch (...) {
    }
    try {
      start()->wait();
    } catch (const std::exception& e) {
      throw std::runtime_error("the process group failed at " + what + " (rank " + std::to_string(rank_) + " of " +
                               std::to_string(world_) + "): " + error_summary(e) + where_others_are(what));
    }
  }

  // What the store says of the other ranks: the step each reached, or that it is unreachable.
  std::string where_others_are(const std::string& what) {
    std::string s;
    try {
      store_->setTimeout(std::chrono::milliseconds(2000));
      for (int r = 0; r < world_; ++r) {
        if (r == rank_) continue;
        const std::string key = "qcast/at/" + std::to_string(r);
        if (!store_->check({key})) {
          s += "; rank " + std::to_string(r) + " never reached a collective";
          continue;
        }
        const std::vector<std::uint8_t> v = store_->get(key);
        const std::string at(v.begin(), v.end());
        if (at != what) s += "; rank " + std::to_string(r) + " did not reach it (its last collective: " + at + ")";
      }
      if (s.empty()) s = "; every other rank reached it: one of them stopped (killed, or out of memory) during it";
    } catch (const std::exception&) {
      s = "; the store on rank 0 is unreachable: rank 0 is gone";
    }
    return s;
  }

  std::string mismatch() {
    std::string s;
    try {
      store_->setTimeout(std::chrono::milliseconds(2000));
      for (int r = 0; r < world_; ++r) {
        const std::string key = "qcast/world/" + std::to_string(r);
        if (!store_->check({key})) continue;
        const int w = store_->get(key).at(0);
        if (w != world_) s += "; rank " + std::to_string(r) + " was started with a world size of " + std::to_string(w);
      }
    } catch (const std::exception&) {
    }
    return s;
  }

  int rank_, world_;
  std::int64_t bytes_ = 0;
  c10::intrusive_ptr<c10d::TCPStore> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
};

}  // namespace

std::unique_ptr<Collective> Collective::join(const DistributedOptions& o) {
  if (o.world_size < 2) throw std::logic_error("a process group needs two ranks or more");
  if (o.rank < 0 || o.rank >= o.world_size)
    throw std::invalid_argument("rank " + std::to_string(o.rank) + " is outside a world of " + std::to_string(o.world_size));
  if (o.port < 1 || o.port > 65535) throw std::invalid_argument("the store's port must be 1..65535, got " + std::to_string(o.port));
  if (!(o.timeout_s > 0)) throw std::invalid_argument("the process group's timeout must be positive");
  return std::make_unique<GlooCollective>(o);
}
#else
std::unique_ptr<Collective> Collective::join(const DistributedOptions&) {
  throw std::runtime_error("this qcast was built without Gloo's headers (Debian: libgloo-dev), so it cannot join a "
                           "process group; rebuild with them, or run one process");
}
#endif

}  // namespace qcast::ptq::detail
