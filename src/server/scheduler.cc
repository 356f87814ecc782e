#include "server/scheduler.h"

#include <algorithm>

namespace trinity::server {

Scheduler::Scheduler(const Model& model, SchedulerOptions options)
    : tasks_(options.tasks), max_queue_(options.max_queue) {
  const int n = options.n_parallel < 1 ? 1 : options.n_parallel;
  node::NodeOptions node_options = options.node;
  // The Batcher is the CPU's batched pass; GPU slots each keep their own forward pass.
  if (n > 1 && options.batching && ResolveDevice(node_options.context.device) == Device::kCpu) {
    BatcherOptions bo;
    bo.n_ctx = node_options.context.n_ctx;
    bo.n_threads = node_options.context.n_threads;
    bo.cpu_path = node_options.context.cpu_path;
    bo.lm_head = node_options.context.lm_head;
    batcher_ = std::make_unique<Batcher>(model, bo);
    node_options.context.batcher = batcher_.get();
  }
  for (int i = 0; i < n; ++i) slots_.push_back(std::make_unique<node::Node>(model, options.tasks, node_options));
  n_ctx_ = slots_.front()->context().n_ctx();
  for (auto& slot : slots_) workers_.emplace_back([this, s = slot.get()] { Work(s); });
}

Scheduler::~Scheduler() { Shutdown(); }

void Scheduler::Shutdown() {
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    dropped.swap(queue_);
    for (auto& job : active_) job->cancelled = true;
  }
  work_cv_.notify_all();
  for (auto& w : workers_) {
    if (w.joinable()) w.join();
  }
  for (auto& job : dropped) {
    if (job->drop) job->drop();
    if (job->done) job->done();
  }
}

Scheduler::Admission Scheduler::Submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(mu_);
    if (draining_ || stopping_) return Admission::kDraining;
    // A free slot takes the job at once; otherwise it waits, up to max_queue_ jobs.
    const int64_t free_slots = static_cast<int64_t>(slots_.size()) - running_;
    if (static_cast<int64_t>(queue_.size()) - free_slots >= static_cast<int64_t>(max_queue_)) {
      return Admission::kQueueFull;
    }
    job->enqueued = Clock::now();
    queue_.push_back(std::move(job));
  }
  work_cv_.notify_one();
  return Admission::kAccepted;
}

void Scheduler::Work(node::Node* slot) {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
      active_.push_back(job);
    }
    job->started = Clock::now();
    if (job->Stopped()) {
      if (job->drop) job->drop();
    } else {
      job->run(*slot, *job);
    }
    slot->context().Idle();  // the batcher need not wait for this slot's next token
    {
      std::lock_guard lock(mu_);
      --running_;
      std::erase(active_, job);
    }
    idle_cv_.notify_all();
    if (job->done) job->done();
  }
}

void Scheduler::Drain() {
  std::unique_lock lock(mu_);
  draining_ = true;
  idle_cv_.wait(lock, [this] { return queue_.empty() && running_ == 0; });
}

int64_t Scheduler::running() const {
  std::lock_guard lock(mu_);
  return running_;
}

int64_t Scheduler::waiting() const {
  std::lock_guard lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

bool Scheduler::draining() const {
  std::lock_guard lock(mu_);
  return draining_;
}

}  // namespace trinity::server
