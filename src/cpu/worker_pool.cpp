// The process's worker threads (worker_pool.hpp). A call posts one job: a counter of tasks that the
// caller and any worker claim one at a time, so each task runs exactly once, on whichever thread
// claims it first. Workers poll a short while for the next job before they sleep, because the
// drivers post jobs back to back (a statistics pass, then the cast) and a cast loop posts the next
// one microseconds later: back-to-back 128K-element casts ran 10 % faster than with workers that
// sleep at once (docs/design/0002-cpu-kernels.md).
#include "worker_pool.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

namespace qcast::kernels {
namespace {

// How long an idle thread polls before it blocks: long enough to span the gap between a driver's
// passes and between the casts of a loop, short enough that idle workers do not compete for long
// with whatever the program does next.
constexpr std::chrono::microseconds kSpin{100};

// Workers at most; tasks beyond them run on whichever thread is free.
constexpr int kMaxWorkers = 256;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Threads that may poll at once: one per hardware thread. Polling beyond that would take cores from
// the threads with work (a pool grown past the core count by a large `threads`).
int polling_threads() {
  static const int n = std::max(1, int(std::thread::hardware_concurrency()));
  return n;
}

// Polls done() for up to kSpin; whether it became true.
template <class Done>
bool spin_until(Done&& done) {
  const auto end = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= end) return done();
  }
}

// > 0 while this thread runs a task: a call from inside a task runs its tasks on this thread.
thread_local int task_depth = 0;

struct Job {
  void (*task)(void*, int) = nullptr;
  void* context = nullptr;
  int count = 0;
  std::atomic<int> next{0};      // the next task to claim
  std::atomic<int> finished{0};  // tasks run to their end
  std::mutex m;
  std::condition_variable all_finished;
  std::exception_ptr error;  // the first a task threw; under m

  // Claims and runs one task; false when none is left to claim.
  bool run_one() {
    const int k = next.fetch_add(1, std::memory_order_relaxed);
    if (k >= count) return false;
    ++task_depth;
    try {
      task(context, k);
    } catch (...) {
      std::lock_guard<std::mutex> lock(m);
      if (!error) error = std::current_exception();
    }
    --task_depth;
    // Release: the task's writes are visible to the caller that sees the count complete.
    if (finished.fetch_add(1, std::memory_order_acq_rel) + 1 == count) {
      std::lock_guard<std::mutex> lock(m);
      all_finished.notify_all();
    }
    return true;
  }

  bool complete() const { return finished.load(std::memory_order_acquire) == count; }

  // poll: whether to poll before blocking (the threads of the call fit the hardware threads).
  void wait(bool poll) {
    if (poll && spin_until([&] { return complete(); })) return;
    std::unique_lock<std::mutex> lock(m);
    all_finished.wait(lock, [&] { return complete(); });
  }
};

class Pool {
 public:
  // Queues the job for up to `helpers` workers, starting workers up to that many.
  void post(const std::shared_ptr<Job>& job, int helpers) {
    std::lock_guard<std::mutex> lock(m_);
    helpers = std::min(helpers, kMaxWorkers);
    while (workers_ < helpers) {
      try {
        std::thread(&Pool::work, this, workers_ + 1 < polling_threads()).detach();
      } catch (const std::system_error&) {
        break;  // no more threads: the caller runs what the others do not take
      }
      ++workers_;
    }
    if (workers_ == 0) return;  // none could start: the caller runs every task, nobody would dequeue it
    jobs_.push_back(job);
    posted_.fetch_add(1, std::memory_order_release);
    // Wake as many sleepers as the job has tasks for; polling workers see posted_ change.
    for (int i = 0; i < std::min(helpers, sleeping_); ++i) wake_.notify_one();
  }

 private:
  // poll: whether this worker polls before it sleeps (workers beyond the hardware threads do not).
  void work(bool poll) {
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      if (jobs_.empty() && poll) {
        const unsigned seen = posted_.load(std::memory_order_acquire);
        lock.unlock();
        spin_until([&] { return posted_.load(std::memory_order_acquire) != seen; });
        lock.lock();
      }
      if (jobs_.empty()) {
        ++sleeping_;
        wake_.wait(lock, [&] { return !jobs_.empty(); });
        --sleeping_;
      }
      const std::shared_ptr<Job> job = jobs_.front();
      lock.unlock();
      while (job->run_one()) {
      }
      lock.lock();
      // Every task of the job is claimed: it leaves the queue (another thread may have removed it).
      const auto at = std::find(jobs_.begin(), jobs_.end(), job);
      if (at != jobs_.end()) jobs_.erase(at);
    }
  }

  std::mutex m_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> jobs_;  // jobs that may have tasks left to claim
  std::atomic<unsigned> posted_{0};        // jobs posted so far, which spinning workers watch
  int workers_ = 0;
  int sleeping_ = 0;
};

// The pool, never destroyed: its workers block on it until the process ends. A child process
// after fork() has none of the parent's workers and starts a pool of its own (the parent's may
// have been locked at the fork; it is left untouched).
std::atomic<Pool*> the_pool{nullptr};

Pool& pool() {
  Pool* p = the_pool.load(std::memory_order_acquire);
  if (p) return *p;
  static std::once_flag at_fork;
  std::call_once(at_fork, [] { pthread_atfork(nullptr, nullptr, [] { the_pool.store(nullptr); }); });
  auto* fresh = new Pool;
  if (the_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;  // another thread made it first
  return *p;
}

}  // namespace

void run_tasks(int count, int threads, void (*task)(void* context, int k), void* context) {
  if (count <= 0) return;
  auto job = std::make_shared<Job>();
  job->task = task;
  job->context = context;
  job->count = count;
  const int helpers = std::min(count, threads) - 1;
  // From inside a task, or with nothing to share: every task on this thread, in order.
  const bool shared = helpers > 0 && task_depth == 0;
  if (shared) pool().post(job, helpers);
  while (job->run_one()) {
  }
  if (shared) job->wait(helpers + 1 <= polling_threads());
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace qcast::kernels
