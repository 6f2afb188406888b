// The boundary state of every calibration batch on both streams, kept between stages: in memory up to
// a budget, the rest spilled to files in a temporary folder that is removed with the cache (on
// success, on error, and on a stop asked through the progress callback). Internal to src/ptq.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "stage_graph.hpp"

namespace qcast::ptq::detail {

class BoundaryCache {
 public:
  // slots: one per stream and batch. budget_bytes: how much state stays in memory.
  // spill_parent: where the temporary folder is made (empty: the system's temporary folder).
  BoundaryCache(std::size_t slots, std::int64_t budget_bytes, std::string spill_parent);
  ~BoundaryCache();
  BoundaryCache(const BoundaryCache&) = delete;
  BoundaryCache& operator=(const BoundaryCache&) = delete;

  Env take(std::size_t slot);           // the slot's state, read back from disk if it was spilled
  void put(std::size_t slot, Env env);  // kept in memory while within the budget, else spilled

  std::int64_t resident_bytes() const { return resident_; }
  std::int64_t peak_resident_bytes() const { return peak_resident_; }
  std::int64_t peak_spilled_bytes() const { return peak_spilled_; }
  std::int64_t spill_writes() const { return spill_writes_; }
  const std::string& folder() const { return folder_; }  // "" until the first spill

  // The bytes of tensor data an environment holds (each storage once).
  static std::int64_t bytes_of(const Env& env);

 private:
  struct Slot {
    Env env;
    std::int64_t bytes = 0;
    std::int64_t file_bytes = 0;
    bool on_disk = false;
  };
  std::string path_of(std::size_t slot) const;
  void spill(std::size_t slot, const Env& env);
  std::vector<Slot> slots_;
  std::int64_t budget_, resident_ = 0, peak_resident_ = 0, spilled_ = 0, peak_spilled_ = 0, spill_writes_ = 0;
  std::string parent_, folder_;
};

// Half of the memory the system reports available (MemAvailable), or 4 GiB where it reports none.
std::int64_t default_cache_bytes();

}  // namespace qcast::ptq::detail
