// The scheduler: owns every piece of shared mutable state of the server — the slots (one
// node::Node, hence one Context / KV cache, each), the bounded FIFO of waiting jobs, the
// running/waiting counts and the drain state. HTTP handlers only Submit() jobs and wait on them.
//
// Each slot runs its job on its own worker thread (the node's prompt building, sampling, label
// scoring, streaming). With several slots the engine work is continuously batched: every slot's
// context is attached to one Batcher, whose step thread evaluates the next token of every
// decoding slot (and chunks of new prompts) as one forward pass, so the weights are read once
// per step for all of them. A job that starts joins at the next step; one that ends leaves.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/model/batcher.h"
#include "engine/model/model.h"
#include "node/node.h"
#include "node/task.h"

namespace trinity::server {

using Clock = std::chrono::steady_clock;

// One request's work, run on a slot. `run` must return soon after `Stopped()` turns true (it is
// checked between decode steps); `drop` is called instead of `run` when the job's deadline passed
// while it waited. `done` is called last, once the slot counts as free again: the HTTP side answers
// the client only then, so that client's next request finds the slot free (with --queue 0 it
// would otherwise be refused with 429 while this job's worker was still counted as running).
struct Job {
  std::function<void(node::Node& node, Job& job)> run;
  std::function<void()> drop;
  std::function<void()> done;
  std::atomic<bool> cancelled{false};  // set by the HTTP side: the client went away
  Clock::time_point enqueued;
  Clock::time_point started;
  Clock::time_point deadline = Clock::time_point::max();
  bool TimedOut() const { return Clock::now() > deadline; }
  bool Stopped() const { return cancelled.load() || TimedOut(); }
};

struct SchedulerOptions {
  int n_parallel = 1;        // slots
  size_t max_queue = 16;     // waiting jobs beyond the slots; more are refused
  node::NodeOptions node;    // context size, threads (of the batched pass, or per slot), prompt mode
  bool batching = true;      // continuous batching when n_parallel > 1
  node::TaskRegistry tasks = node::TaskRegistry::Builtin();
};

class Scheduler {
 public:
  enum class Admission { kAccepted, kQueueFull, kDraining };

  Scheduler(const Model& model, SchedulerOptions options);
  ~Scheduler();  // Shutdown()

  Admission Submit(std::shared_ptr<Job> job);
  // Stops accepting jobs and blocks until every queued and running job has finished.
  void Drain();
  // Cancels the running jobs (they stop at their next token), drops the queued ones and joins the
  // workers. Submit() refuses everything afterwards.
  void Shutdown();

  int64_t running() const;
  int64_t waiting() const;
  int n_slots() const { return static_cast<int>(slots_.size()); }
  bool draining() const;
  const node::TaskRegistry& tasks() const { return tasks_; }
  int64_t n_ctx() const { return n_ctx_; }
  // The batched forward pass's counters; all zero without batching.
  BatcherStats batch_stats() const { return batcher_ ? batcher_->stats() : BatcherStats{}; }
  bool batching() const { return batcher_ != nullptr; }

 private:
  void Work(node::Node* slot);

  node::TaskRegistry tasks_;
  size_t max_queue_;
  int64_t n_ctx_ = 0;
  std::unique_ptr<Batcher> batcher_;  // outlives the slots' contexts (declared before them)
  std::vector<std::unique_ptr<node::Node>> slots_;
  std::vector<std::thread> workers_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // a job arrived, or stopping
  std::condition_variable idle_cv_;  // a job finished (for Drain)
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::shared_ptr<Job>> active_;  // jobs holding a slot
  int64_t running_ = 0;
  bool draining_ = false;
  bool stopping_ = false;
};

}  // namespace trinity::server
