#include "engine/model/batcher.h"

#include <algorithm>

#include "engine/common/error.h"

namespace trinity {

namespace {

ContextOptions EngineOptions(const BatcherOptions& o) {
  ContextOptions c(o.n_ctx, o.n_threads);
  c.cpu_path = o.cpu_path;
  c.lm_head = o.lm_head;
  return c;
}

}  // namespace

Batcher::Batcher(const Model& model, BatcherOptions options)
    : engine_(model, EngineOptions(options), Context::ComputeOnly{}),
      max_rows_(std::clamp<int64_t>(options.max_rows, 1, Context::kMaxBatch)),
      gather_(std::max(options.gather, std::chrono::microseconds{0})) {
  thread_ = std::thread([this] { Loop(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

BatcherStats Batcher::stats() const {
  return BatcherStats{steps_.load(), rows_.load(), decode_rows_.load(), static_cast<double>(busy_ns_.load()) * 1e-9};
}

void Batcher::Eval(Context& seq, std::span<const int32_t> tokens, float* all_logits) {
  if (&seq.model_ != &engine_.model_) Fail("a context was attached to the batcher of another model");
  if (seq.n_ctx_ > engine_.n_ctx_) {
    Fail("a context of {} positions is larger than its batcher's {}", seq.n_ctx_, engine_.n_ctx_);
  }
  Request request{&seq, tokens, all_logits, 0, false, nullptr};
  std::unique_lock lock(mu_);
  if (stopping_) Fail("the batcher is shutting down");
  pending_.push_back(&request);
  work_cv_.notify_one();
  done_cv_.wait(lock, [&] { return request.finished; });
  if (request.error) std::rethrow_exception(request.error);
}

void Batcher::Idle(Context& seq) {
  {
    std::lock_guard lock(mu_);
    std::erase(expected_, &seq);
  }
  work_cv_.notify_one();
}

void Batcher::Detach(Context& seq) { Idle(seq); }

bool Batcher::ExpectedAllBack() const {
  for (const Context* seq : expected_) {
    const bool back = std::any_of(pending_.begin(), pending_.end(), [&](const Request* r) { return r->seq == seq; });
    if (!back) return false;
  }
  return true;
}

void Batcher::Loop() {
  std::vector<Context::Row> rows;
  rows.reserve(static_cast<size_t>(max_rows_));
  struct Taken {
    Request* request;
    size_t n;  // tokens of the request in this step
  };
  std::vector<Taken> taken;
  const int64_t n_vocab = engine_.config_.n_vocab;

  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stopping, nothing left
    // Let the last step's sequences come back with their next token (sampling, streaming the
    // text out) so they share this step: at most a quarter of a step, at most gather_. (Small
    // models step in a millisecond or two, so a longer wait for a descheduled straggler would
    // cost more than the straggler's row gains.)
    if (!ExpectedAllBack()) {
      const auto wait = std::min<std::chrono::nanoseconds>(gather_, last_step_ / 4);
      work_cv_.wait_for(lock, wait, [&] { return stopping_ || ExpectedAllBack(); });
    }

    // The step: decoding sequences (one token to go) first, so a long prompt never delays them;
    // then prompts in arrival order, in chunks that fill the remaining rows.
    rows.clear();
    taken.clear();
    int64_t budget = max_rows_;
    for (int pass = 0; pass < 2 && budget > 0; ++pass) {
      for (Request* r : pending_) {
        const size_t left = r->tokens.size() - r->done;
        if ((pass == 0) != (left == 1) || budget == 0) continue;
        const size_t n = std::min<size_t>(left, static_cast<size_t>(budget));
        taken.push_back(Taken{r, n});
        budget -= static_cast<int64_t>(n);
      }
    }
    for (const Taken& t : taken) {
      Request& r = *t.request;
      for (size_t j = 0; j < t.n; ++j) {
        const size_t i = r.done + j;
        float* logits = r.all_logits ? r.all_logits + static_cast<int64_t>(i) * n_vocab
                                     : (i + 1 == r.tokens.size() ? r.seq->logits_.data() : nullptr);
        rows.push_back(Context::Row{r.seq, r.tokens[i], r.seq->n_past_ + static_cast<int64_t>(j), logits});
      }
    }
    lock.unlock();

    const auto start = std::chrono::steady_clock::now();
    std::exception_ptr error;
    try {
      engine_.EvalRows(rows.data(), static_cast<int64_t>(rows.size()));
    } catch (...) {
      error = std::current_exception();
    }
    const auto elapsed = std::chrono::steady_clock::now() - start;
    steps_.fetch_add(1);
    busy_ns_.fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()));
    rows_.fetch_add(rows.size());
    for (const Taken& t : taken) {
      if (t.request->tokens.size() - t.request->done == 1) decode_rows_.fetch_add(1);
    }

    lock.lock();
    last_step_ = std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed);
    expected_.clear();
    for (const Taken& t : taken) {
      Request& r = *t.request;
      if (error) {  // the sequence keeps the positions it had before this step
        r.error = error;
        r.finished = true;
        continue;
      }
      r.done += t.n;
      r.seq->n_past_ += static_cast<int64_t>(t.n);
      if (r.done == r.tokens.size()) {
        r.finished = true;
        if (r.all_logits) {
          const float* last = r.all_logits + static_cast<int64_t>(r.tokens.size() - 1) * n_vocab;
          std::copy(last, last + n_vocab, r.seq->logits_.begin());
        }
        expected_.push_back(r.seq);
      }
    }
    std::erase_if(pending_, [](const Request* r) { return r->finished; });
    done_cv_.notify_all();
  }
}

}  // namespace trinity
