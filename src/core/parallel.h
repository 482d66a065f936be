// A fixed pool of worker threads for the CPU backend: parallel_for splits [0, n) into
// contiguous chunks, one per thread, and blocks until all are done. One pool per process,
// owned by whoever creates it (the CPU backend), never a global.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lowbit {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads = 0);  // 0 = hardware concurrency
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // fn(begin, end) over contiguous chunks of [0, n); the calling thread takes a chunk too.
  // `work_per_item` estimates the scalar operations of one item: below kMinParallelWork in total
  // the loop runs inline, since waking the workers (~10 us) costs more than a small op (a 64x64
  // GEMV of a tiny model) takes on one core.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t work_per_item = 1 << 20);
  static constexpr int64_t kMinParallelWork = 1 << 16;

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace lowbit
