#include "server/server.h"

#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "engine/chat/chat.h"
#include "engine/common/error.h"
#include "engine/common/thread_pool.h"
#include "engine/model/generate.h"
#include "node/stats.h"
#include "server/api.h"
#include "server/metrics.h"
#include "server/scheduler.h"

namespace trinity::server {

namespace {

enum class State { kStarting, kLoading, kReady, kDraining, kStopped };

// A stream sends at most one text event per interval (see the content provider): 1 ms, far below
// what a reader notices, above a small model's time per token.
constexpr auto kStreamCoalesce = std::chrono::milliseconds(1);

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

ApiError MakeError(int status, std::string message, std::string type, std::string code = "",
                   std::string param = "") {
  ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  e.param = std::move(param);
  return e;
}

std::string Dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

void SendJson(httplib::Response& res, int status, const json& value) {
  res.status = status;
  res.set_content(Dump(value), "application/json");
}

void SendError(httplib::Response& res, const ApiError& e) {
  if (e.status == 429 || e.status == 503) res.set_header("Retry-After", "1");
  SendJson(res, e.status, e.ToJson());
}

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0 && !b.empty();
}

// The socket of the connection `req` came on. cpp-httplib 0.11 does not hand it to handlers, so it
// is found among the process's sockets by its address pair, which is unique while the handler runs
// (the connection stays open until the handler returns). -1 when not found.
int ConnectionSocket(const httplib::Request& req) {
  auto name = [](const sockaddr_storage& addr, socklen_t len, std::string& host, int& port) {
    char h[NI_MAXHOST];
    char p[NI_MAXSERV];
    if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, h, sizeof h, p, sizeof p,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
      return false;
    }
    host = h;
    port = std::atoi(p);
    return true;
  };
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const int fd = std::atoi(entry.path().filename().c_str());
    struct stat st{};
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{};
    sockaddr_storage peer{};
    socklen_t local_len = sizeof local;
    socklen_t peer_len = sizeof peer;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;
    std::string local_host, peer_host;
    int local_port = 0, peer_port = 0;
    if (!name(local, local_len, local_host, local_port) || !name(peer, peer_len, peer_host, peer_port)) continue;
    if (peer_port == req.remote_port && peer_host == req.remote_addr && local_port == req.local_port) return fd;
  }
  return -1;
}

// True when the peer of `fd` has closed or reset the connection. Bytes waiting to be read (a
// pipelined next request) do not count. A client that half-closes its side after sending (rare
// for HTTP clients) counts as gone too: the two cannot be told apart without writing.
bool PeerClosed(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLERR | POLLHUP | POLLRDHUP)) return true;
  char c;
  return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

// Waits until `finished`; meanwhile a client that hangs up cancels the job, which then stops
// within a decode step (its slot is freed) and still reaches `finished`. Returns whether the
// client went away.
bool AwaitJob(const httplib::Request& req, std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
              const bool& finished, Job& job) {
  constexpr auto kPollInterval = std::chrono::milliseconds(50);
  std::optional<int> fd;  // looked up once the job outlasts one interval (short jobs never pay)
  bool client_gone = false;
  while (!cv.wait_for(lock, kPollInterval, [&] { return finished; })) {
    if (client_gone) continue;
    lock.unlock();  // the job takes this lock for every token
    if (!fd) fd = ConnectionSocket(req);
    const bool closed = *fd >= 0 && PeerClosed(*fd);
    lock.lock();
    if (closed) {
      client_gone = true;
      job.cancelled = true;
    }
  }
  return client_gone;
}

// What a generation job and the HTTP thread waiting on it share.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::string pending;  // text produced and not yet sent
  bool finished = false;
  std::optional<ApiError> error;
  std::string finish_reason;
  Usage usage;
  bool timed_out = false;
  std::optional<Clock::time_point> first_text;
  std::optional<Clock::time_point> last_text;
  double queue_s = 0.0;
};

// A prepared completion: everything the slot needs, validated on the HTTP thread.
struct Completion {
  CompletionRequest request;
  std::vector<int32_t> prompt;
  int32_t max_tokens = 0;
  std::string id;
  int64_t created = 0;
  Clock::time_point arrival;
};

}  // namespace

struct Server::Impl {
  ServerOptions options;
  httplib::Server http;
  std::thread listener;
  std::atomic<bool> listener_done{false};  // listen_after_bind() returned
  int port = 0;
  std::atomic<State> state{State::kStarting};
  std::unique_ptr<Model> model;
  std::unique_ptr<Scheduler> scheduler;
  Metrics metrics;
  std::string model_id;
  int64_t created = 0;
  std::atomic<uint64_t> next_id{0};
  uint64_t id_salt = 0;

  explicit Impl(ServerOptions o) : options(std::move(o)) {
    model_id = options.model_id;
    if (model_id.empty()) model_id = std::filesystem::path(options.model_path).stem().string();
    created = static_cast<int64_t>(std::time(nullptr));
    id_salt = std::random_device{}();
  }

  std::string NewId(const char* prefix) {
    return fmt::format("{}-{:08x}{:08x}", prefix, id_salt & 0xffffffffu, next_id.fetch_add(1));
  }

  void RequireReady() const {
    switch (state.load()) {
      case State::kReady: return;
      case State::kDraining:
      case State::kStopped: throw MakeError(503, "the server is shutting down", "unavailable_error", "draining");
      default: throw MakeError(503, "the model is loading", "unavailable_error", "loading");
    }
  }

  void Admit(const std::shared_ptr<Job>& job) {
    switch (scheduler->Submit(job)) {
      case Scheduler::Admission::kAccepted: return;
      case Scheduler::Admission::kQueueFull:
        throw MakeError(429, fmt::format("the server is busy: {} requests running and {} waiting; retry later",
                                         scheduler->running(), scheduler->waiting()),
                        "rate_limit_error", "queue_full");
      case Scheduler::Admission::kDraining:
        throw MakeError(503, "the server is shutting down", "unavailable_error", "draining");
    }
  }

  // Runs `handler`, turning every exception into an OpenAI error response. `inference` routes
  // count their failures in trinity_requests_total.
  httplib::Server::Handler Wrap(bool inference,
                                std::function<void(const httplib::Request&, httplib::Response&)> handler) {
    return [this, inference, handler](const httplib::Request& req, httplib::Response& res) {
      std::optional<ApiError> error;
      try {
        handler(req, res);
        return;
      } catch (const ApiError& e) {
        error = e;
      } catch (const trinity::Error& e) {
        error = MakeError(400, e.what(), "invalid_request_error");
      } catch (const std::exception& e) {
        error = MakeError(500, fmt::format("internal error: {}", e.what()), "server_error");
      }
      if (inference) {
        metrics.CountRequest(error->status == 429 || error->status == 503 ? Outcome::kRejected
                             : error->status >= 500                        ? Outcome::kError
                                                                           : Outcome::kBadRequest);
      }
      SendError(res, *error);
    };
  }

  // ---- completions --------------------------------------------------------------------------

  Completion Prepare(const httplib::Request& req, bool chat) {
    RequireReady();
    Completion c;
    c.arrival = Clock::now();
    const json body = ParseBody(req.body);
    c.request = ParseCompletionRequest(body, chat);
    if (!c.request.model.empty() && c.request.model != model_id) {
      throw MakeError(404, fmt::format("The model `{}` does not exist (this server serves `{}`)", c.request.model,
                                       model_id),
                      "invalid_request_error", "model_not_found", "model");
    }
    c.request.sampling = ParseSampling(body, options.sampling);
    try {
      Validate(c.request.sampling);
    } catch (const trinity::Error& e) {
      ThrowBadRequest(e.what());
    }
    const Tokenizer& tokenizer = model->tokenizer();
    const TokenizerData& vocab = tokenizer.data();
    if (chat) {
      const ChatFormat format = model->chat_format();
      if (format == ChatFormat::kRaw && vocab.add_bos && vocab.bos_id >= 0) c.prompt.push_back(vocab.bos_id);
      // The template's special tokens (BOS, <|eot_id|>) are parsed; the messages' text never is.
      const ChatPrompt p = RenderChatTemplate(format, c.request.messages, /*add_generation_prompt=*/true);
      const std::vector<int32_t> text = format == ChatFormat::kRaw ? tokenizer.Encode(p.text, /*parse_special=*/false)
                                                                    : tokenizer.EncodeWithPlain(p.text, p.contents);
      c.prompt.insert(c.prompt.end(), text.begin(), text.end());
    } else if (!c.request.prompt_tokens.empty()) {
      for (int32_t id : c.request.prompt_tokens) {
        if (id >= tokenizer.n_vocab()) {
          ThrowBadRequest(fmt::format("token id {} is out of range (vocabulary of {})", id, tokenizer.n_vocab()),
                          "prompt");
        }
      }
      c.prompt = c.request.prompt_tokens;
    } else {
      if (vocab.add_bos && vocab.bos_id >= 0) c.prompt.push_back(vocab.bos_id);
      const std::vector<int32_t> text = tokenizer.Encode(c.request.prompt, /*parse_special=*/false);
      c.prompt.insert(c.prompt.end(), text.begin(), text.end());
    }
    const int64_t n_ctx = scheduler->n_ctx();
    const int64_t n_prompt = static_cast<int64_t>(c.prompt.size());
    const int64_t requested = c.request.max_tokens.value_or(0);
    if (n_prompt >= n_ctx || n_prompt + requested > n_ctx) {
      const char* where = chat ? "messages" : "prompt";
      std::string message =
          c.request.max_tokens
              ? fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens ({} "
                            "in the {}, {} in the completion). Please reduce the length of the {} or completion.",
                            n_ctx, n_prompt + requested, n_prompt, where, requested, where)
              : fmt::format("This model's maximum context length is {} tokens. However, your {} resulted in {} "
                            "tokens. Please reduce the length of the {}.",
                            n_ctx, where, n_prompt, where);
      ThrowBadRequest(std::move(message), c.request.max_tokens && n_prompt < n_ctx ? "max_tokens" : where,
                      "context_length_exceeded");
    }
    c.max_tokens = static_cast<int32_t>(c.request.max_tokens.value_or(static_cast<int32_t>(n_ctx - n_prompt)));
    c.id = NewId(chat ? "chatcmpl" : "cmpl");
    c.created = static_cast<int64_t>(std::time(nullptr));
    return c;
  }

  std::shared_ptr<Job> MakeJob(const std::shared_ptr<const Completion>& c, const std::shared_ptr<Channel>& ch) {
    auto job = std::make_shared<Job>();
    job->deadline = c->arrival + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(options.timeout_s));
    const double step_delay_ms = options.step_delay_ms;
    job->run = [this, c, ch, step_delay_ms](node::Node& node, Job& job) {
      {
        std::lock_guard lock(ch->mu);
        ch->queue_s = std::chrono::duration<double>(job.started - job.enqueued).count();
      }
      GenerateOptions g;
      g.max_tokens = c->max_tokens;
      g.stop = c->request.stop;
      g.stop_at_eog = !c->request.ignore_eos;
      g.on_text = [&](std::string_view piece) {
        const auto now = Clock::now();
        {
          std::lock_guard lock(ch->mu);
          if (ch->last_text) metrics.ObserveInterToken(std::chrono::duration<double>(now - *ch->last_text).count());
          if (!ch->first_text) ch->first_text = now;
          ch->last_text = now;
          ch->pending.append(piece);
        }
        // Only a stream's writer waits for text; the waiter of a plain answer waits for `finished`,
        // and waking it for every token would cost a futex wake and a context switch per token
        // (~15% of a single-threaded node's time on a small model, measured with perf).
        if (c->request.stream) ch->cv.notify_all();
        if (step_delay_ms > 0.0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(step_delay_ms));
        return !job.Stopped();
      };
      std::optional<ApiError> error;
      GenerateResult r;
      try {
        Sampler sampler(c->request.sampling);
        node.context().Reset();
        r = Generate(node.context(), sampler, c->prompt, g);
      } catch (const std::exception& e) {
        error = MakeError(500, fmt::format("generation failed: {}", e.what()), "server_error");
      }
      {
        std::lock_guard lock(ch->mu);
        ch->error = error;
        ch->timed_out = r.cancelled && job.TimedOut();
        // A request cut by its timeout ends like one cut by max_tokens.
        ch->finish_reason = ch->timed_out ? "length" : FinishReasonName(r.finish_reason);
        ch->usage = {r.n_prompt, r.n_generated(), r.prompt_ms, r.generate_ms};
      }
      ch->cv.notify_all();
    };
    job->drop = [ch] {
      std::lock_guard lock(ch->mu);
      ch->error = MakeError(503, "timed out waiting for a free slot", "unavailable_error", "timeout");
      ch->timed_out = true;
    };
    job->done = [ch] {
      {
        std::lock_guard lock(ch->mu);
        ch->finished = true;
      }
      ch->cv.notify_all();
    };
    return job;
  }

  void Record(const Completion& c, Channel& ch, Outcome outcome) {
    metrics.CountRequest(outcome);
    metrics.CountTokens(ch.usage.prompt_tokens, ch.usage.completion_tokens);
    metrics.ObserveQueueTime(ch.queue_s);
    if (ch.first_text) metrics.ObserveTtft(std::chrono::duration<double>(*ch.first_text - c.arrival).count());
    metrics.ObserveLatency(SecondsSince(c.arrival));
  }

  void HandleCompletion(const httplib::Request& req, httplib::Response& res, bool chat) {
    auto c = std::make_shared<const Completion>(Prepare(req, chat));
    auto ch = std::make_shared<Channel>();
    std::shared_ptr<Job> job = MakeJob(c, ch);
    Admit(job);
    if (!c->request.stream) {
      std::unique_lock lock(ch->mu);
      if (AwaitJob(req, lock, ch->cv, ch->finished, *job)) {
        metrics.CountRequest(Outcome::kCancelled);
        return;  // nobody to answer
      }
      if (ch->error) {
        Record(*c, *ch, ch->error->status == 503 ? Outcome::kTimeout : Outcome::kError);
        SendError(res, *ch->error);
        return;
      }
      Record(*c, *ch, ch->timed_out ? Outcome::kTimeout : Outcome::kOk);
      SendJson(res, 200,
               CompletionResponse(c->request, c->id, c->created, model_id, ch->pending, ch->finish_reason, ch->usage));
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    auto role_sent = std::make_shared<bool>(false);
    auto last_text_sent = std::make_shared<std::optional<Clock::time_point>>();
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, c, ch, job, role_sent, last_text_sent](size_t, httplib::DataSink& sink) -> bool {
          auto write = [&](const std::string& event) {
            if (sink.write(event.data(), event.size())) return true;
            job->cancelled = true;  // the client went away: the slot stops at its next token
            return false;
          };
          const CompletionRequest& r = c->request;
          if (!*role_sent) {  // sent at once, before the job holds a slot
            *role_sent = true;
            if (r.chat) return write(SseEvent(ChunkJson(r, c->id, c->created, model_id, {{"role", "assistant"}, {"content", ""}}, "")));
          }
          // Text that comes faster than one event per kStreamCoalesce goes out together: this
          // thread sleeps out the rest of the interval after a text event, and the slot's
          // notifications meanwhile find no waiter and cost nothing. Each event costs this
          // thread a wake-up and a send, the proxy and the client a read and a parse; on a small
          // model (~0.16 ms per token) that was as much CPU as the tokens themselves (perf: 26%
          // of a node's samples in wake-ups). A model slower than that is not delayed at all, the
          // first text never is, and at most kStreamCoalesce is added to any token's arrival.
          if (*last_text_sent) {
            const auto next = **last_text_sent + kStreamCoalesce;
            if (Clock::now() < next) std::this_thread::sleep_until(next);
          }
          std::string text;
          bool finished = false;
          {
            std::unique_lock lock(ch->mu);
            ch->cv.wait(lock, [&] { return ch->finished || !ch->pending.empty(); });
            text.swap(ch->pending);
            finished = ch->finished;
          }
          if (!text.empty()) {
            const json delta = r.chat ? json{{"content", text}} : json(text);
            if (!write(SseEvent(ChunkJson(r, c->id, c->created, model_id, delta, "")))) return false;
            *last_text_sent = Clock::now();
          }
          if (!finished) return true;
          std::string tail;
          Outcome outcome = ch->timed_out ? Outcome::kTimeout : Outcome::kOk;
          if (ch->error) {
            outcome = ch->error->status == 503 ? Outcome::kTimeout : Outcome::kError;
            tail = SseEvent(ch->error->ToJson());
          } else {
            const json last_delta = r.chat ? json::object() : json("");
            json last = ChunkJson(r, c->id, c->created, model_id, last_delta, ch->finish_reason);
            last["timings"] = TimingsJson(ch->usage);
            tail = SseEvent(last);
            if (r.include_usage) {
              tail += SseEvent({{"id", c->id},
                                {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
                                {"created", c->created},
                                {"model", model_id},
                                {"choices", json::array()},
                                {"usage", UsageJson(ch->usage)}});
            }
          }
          tail += kSseDone;
          if (!write(tail)) return false;
          Record(*c, *ch, outcome);
          sink.done();
          return true;
        },
        [this, c, ch, job](bool success) {
          if (success) return;
          job->cancelled = true;
          // Counted here once the stream is cut; the job itself may still be finishing its step.
          metrics.CountRequest(Outcome::kCancelled);
        });
  }

  // ---- tasks ----------------------------------------------------------------------------------

  void HandleTask(const httplib::Request& req, httplib::Response& res) {
    RequireReady();
    const auto arrival = Clock::now();
    const json body = ParseBody(req.body);
    node::TaskRequest request;
    if (!body.contains("task") || !body["task"].is_string()) ThrowBadRequest("'task' must be a string", "task");
    if (!body.contains("input") || !body["input"].is_string()) ThrowBadRequest("'input' must be a string", "input");
    request.task = body["task"].get<std::string>();
    request.input = body["input"].get<std::string>();
    if (scheduler->tasks().Find(request.task) == nullptr) {
      throw MakeError(404, fmt::format("unknown task \"{}\" (known: {})", request.task, scheduler->tasks().Names()),
                      "invalid_request_error", "task_not_found", "task");
    }
    if (body.contains("max_tokens") && !body["max_tokens"].is_null()) {
      if (!body["max_tokens"].is_number_integer()) ThrowBadRequest("'max_tokens' must be an integer", "max_tokens");
      const int64_t n = body["max_tokens"].get<int64_t>();
      if (n < 1 || n >= scheduler->n_ctx()) {
        ThrowBadRequest(fmt::format("'max_tokens' must be between 1 and {}", scheduler->n_ctx() - 1), "max_tokens");
      }
      request.max_tokens = static_cast<int32_t>(n);
    }
    request.sampling = ParseSampling(body, options.sampling);
    try {
      Validate(*request.sampling);
    } catch (const trinity::Error& e) {
      ThrowBadRequest(e.what());
    }
    struct TaskOutcome {
      std::mutex mu;
      std::condition_variable cv;
      bool finished = false;
      std::optional<ApiError> error;
      node::TaskResult result;
      double queue_s = 0.0;
    };
    auto out = std::make_shared<TaskOutcome>();
    auto job = std::make_shared<Job>();
    job->deadline = arrival + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.timeout_s));
    const double step_delay_ms = options.step_delay_ms;
    job->run = [out, request, step_delay_ms](node::Node& node, Job& job) {
      std::optional<ApiError> error;
      node::TaskResult result;
      try {
        result = node.Process(request, [&job, step_delay_ms] {
          if (step_delay_ms > 0.0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(step_delay_ms));
          return job.Stopped();
        });
      } catch (const trinity::Error& e) {
        error = MakeError(400, e.what(), "invalid_request_error");
      } catch (const std::exception& e) {
        error = MakeError(500, fmt::format("task failed: {}", e.what()), "server_error");
      }
      {
        std::lock_guard lock(out->mu);
        out->error = error;
        out->result = std::move(result);
        out->queue_s = std::chrono::duration<double>(job.started - job.enqueued).count();
      }
    };
    job->drop = [out] {
      std::lock_guard lock(out->mu);
      out->error = MakeError(503, "timed out waiting for a free slot", "unavailable_error", "timeout");
    };
    job->done = [out] {
      {
        std::lock_guard lock(out->mu);
        out->finished = true;
      }
      out->cv.notify_all();
    };
    Admit(job);
    std::unique_lock lock(out->mu);
    if (AwaitJob(req, lock, out->cv, out->finished, *job)) {
      metrics.CountRequest(Outcome::kCancelled);
      return;
    }
    if (out->error) throw *out->error;
    const node::TaskResult& r = out->result;
    metrics.CountRequest(Outcome::kOk);
    metrics.CountTokens(r.prompt_tokens, r.generated_tokens);
    metrics.ObserveQueueTime(out->queue_s);
    metrics.ObserveTtft(out->queue_s + r.ttft_ms / 1000.0);
    metrics.ObserveLatency(SecondsSince(arrival));
    json j = node::ToJson(r);
    j["model"] = model_id;
    j["usage"] = UsageJson({r.prompt_tokens, r.generated_tokens, r.prompt_ms, 0.0});
    SendJson(res, 200, j);
  }

  // ---- small routes ---------------------------------------------------------------------------

  void HandleTokenize(const httplib::Request& req, httplib::Response& res) {
    RequireReady();
    const json body = ParseBody(req.body);
    if (!body.contains("content") || !body["content"].is_string()) ThrowBadRequest("'content' must be a string", "content");
    bool add_special = false;
    if (body.contains("add_special")) {
      if (!body["add_special"].is_boolean()) ThrowBadRequest("'add_special' must be a boolean", "add_special");
      add_special = body["add_special"].get<bool>();
    }
    const Tokenizer& tokenizer = model->tokenizer();
    std::vector<int32_t> tokens;
    if (add_special && tokenizer.data().bos_id >= 0) tokens.push_back(tokenizer.data().bos_id);
    const std::vector<int32_t> text = tokenizer.Encode(body["content"].get<std::string>(), /*parse_special=*/add_special);
    tokens.insert(tokens.end(), text.begin(), text.end());
    SendJson(res, 200, {{"tokens", tokens}});
  }

  void HandleDetokenize(const httplib::Request& req, httplib::Response& res) {
    RequireReady();
    const json body = ParseBody(req.body);
    if (!body.contains("tokens") || !body["tokens"].is_array()) ThrowBadRequest("'tokens' must be an array", "tokens");
    const Tokenizer& tokenizer = model->tokenizer();
    std::vector<int32_t> tokens;
    for (const json& t : body["tokens"]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tokenizer.n_vocab()) {
        ThrowBadRequest(fmt::format("'tokens' must hold token ids in [0, {})", tokenizer.n_vocab()), "tokens");
      }
      tokens.push_back(t.get<int32_t>());
    }
    SendJson(res, 200, {{"content", tokenizer.Decode(tokens)}});
  }

  void HandleHealth(httplib::Response& res) {
    switch (state.load()) {
      case State::kReady: SendJson(res, 200, {{"status", "ok"}}); return;
      case State::kDraining:
      case State::kStopped: SendJson(res, 503, {{"status", "draining"}}); return;
      default: SendJson(res, 503, {{"status", "loading"}}); return;
    }
  }

  void Routes() {
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) { HandleHealth(res); });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      const State st = state.load();  // the scheduler exists from kReady on
      const bool up = st == State::kReady || st == State::kDraining || (st == State::kStopped && scheduler);
      Gauges g;
      if (up) {
        g.running = scheduler->running();
        g.waiting = scheduler->waiting();
        g.slots = scheduler->n_slots();
        g.batch = scheduler->batch_stats();
      }
      res.set_content(metrics.Render(g), "text/plain; version=0.0.4; charset=utf-8");
    });
    http.Get("/v1/models", Wrap(false, [this](const httplib::Request&, httplib::Response& res) {
               SendJson(res, 200,
                        {{"object", "list"},
                         {"data", json::array({{{"id", model_id},
                                                {"object", "model"},
                                                {"created", created},
                                                {"owned_by", "trinity"}}})}});
             }));
    http.Post("/v1/chat/completions", Wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
                HandleCompletion(req, res, /*chat=*/true);
              }));
    http.Post("/v1/completions", Wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
                HandleCompletion(req, res, /*chat=*/false);
              }));
    http.Post("/v1/tasks", Wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
                HandleTask(req, res);
              }));
    http.Get("/v1/tasks", Wrap(false, [this](const httplib::Request&, httplib::Response& res) {
               RequireReady();
               json data = json::array();
               for (const node::TaskSpec& t : scheduler->tasks().tasks()) {
                 data.push_back({{"name", t.name},
                                 {"display_name", t.display_name},
                                 {"answer", node::AnswerKindName(t.answer)},
                                 {"max_tokens", t.default_max_tokens},
                                 {"labels", t.labels}});
               }
               SendJson(res, 200, {{"object", "list"}, {"data", data}});
             }));
    http.Post("/tokenize", Wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
                HandleTokenize(req, res);
              }));
    http.Post("/detokenize", Wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
                HandleDetokenize(req, res);
              }));

    // API key: every route but /health.
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (options.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      const std::string prefix = "Bearer ";
      if (auth.compare(0, prefix.size(), prefix) == 0 && ConstantTimeEquals(auth.substr(prefix.size()), options.api_key)) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      res.set_header("WWW-Authenticate", "Bearer");
      SendError(res, MakeError(401, "invalid or missing API key (Authorization: Bearer KEY)", "authentication_error",
                               "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    });
    // Errors httplib produces itself (404 route, 413 body, 400 framing) get OpenAI's shape too.
    http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req,
                                                                   httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      ApiError e;
      e.status = res.status;
      if (res.status == 404) {
        e = MakeError(404, fmt::format("no route {} {}", req.method, req.path), "invalid_request_error", "not_found");
      } else if (res.status == 413) {
        e = MakeError(413, "the request body is too large", "invalid_request_error", "body_too_large");
      } else {
        e = MakeError(res.status, fmt::format("HTTP error {}", res.status),
                      res.status >= 500 ? "server_error" : "invalid_request_error");
      }
      SendJson(res, e.status, e.ToJson());
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      SendError(res, MakeError(500, "internal error: " + what, "server_error"));
    });
    if (options.log_requests) {
      http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
        std::fprintf(stderr, "%s %s -> %d\n", req.method.c_str(), req.path.c_str(), res.status);
      });
    }
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() { Stop(); }

int Server::Start() {
  Impl& s = *impl_;
  const ServerOptions& o = s.options;
  std::signal(SIGPIPE, SIG_IGN);  // a client that went away must not kill the process
  // Connection threads: every slot and queued request holds one while it waits, plus a few so
  // /health and /metrics always find a free thread.
  const size_t n_http_threads = static_cast<size_t>(std::max(1, o.n_parallel)) + o.max_queue + 8;
  s.http.new_task_queue = [n_http_threads] { return new httplib::ThreadPool(n_http_threads); };
  s.http.set_payload_max_length(o.max_body_bytes);
  s.http.set_keep_alive_timeout(2);
  s.http.set_read_timeout(30);
  s.http.set_write_timeout(30);
  s.Routes();
  if (o.port == 0) {
    s.port = s.http.bind_to_any_port(o.host);
    if (s.port <= 0) Fail("cannot bind to {} (any port)", o.host);
  } else {
    if (!s.http.bind_to_port(o.host, o.port)) Fail("cannot bind to {}:{}", o.host, o.port);
    s.port = o.port;
  }
  s.state = State::kLoading;
  s.listener = std::thread([&s] {
    s.http.listen_after_bind();
    s.listener_done = true;
  });
  try {
    s.model = Model::Load(o.model_path);
    SchedulerOptions so;
    so.n_parallel = std::max(1, o.n_parallel);
    so.max_queue = o.max_queue;
    so.batching = o.batching == Batching::kOn ||
                  (o.batching == Batching::kAuto && s.model->WeightBytesPerToken() >= kAutoBatchingMinBytes);
    // One batched forward pass uses every core; separate slots share them out.
    int threads = o.n_threads;
    if (threads <= 0) {
      threads = ThreadPool::DefaultThreads();
      if (so.n_parallel > 1 && !so.batching) threads = std::max(1, threads / so.n_parallel);
    }
    so.node.context = ContextOptions(o.n_ctx, threads);
    so.node.context.device = o.device;
    so.node.context.lm_head = o.lm_head;
    so.node.context.kv_cache = o.kv_cache;
    so.node.prompt_mode = o.prompt_mode;
    so.node.sampling = o.sampling;
    if (!o.tasks_config.empty()) so.tasks.LoadFile(o.tasks_config);
    s.scheduler = std::make_unique<Scheduler>(*s.model, std::move(so));
  } catch (...) {
    Stop();
    throw;
  }
  s.state = State::kReady;
  return s.port;
}

void Server::Drain() {
  Impl& s = *impl_;
  if (s.state == State::kStopped) return;
  s.state = State::kDraining;
  if (s.scheduler) s.scheduler->Drain();
  Stop();
}

void Server::Stop() {
  Impl& s = *impl_;
  if (s.state == State::kStopped && !s.listener.joinable()) return;
  s.state = State::kStopped;
  // The scheduler first: waiting handlers get their jobs' ends, so httplib's threads can join.
  if (s.scheduler) s.scheduler->Shutdown();
  // httplib's stop() does nothing before the listener thread has started listening, which then
  // runs forever: a model that fails to load at once (a missing file) hung the process.
  while (s.listener.joinable() && !s.http.is_running() && !s.listener_done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  s.http.stop();
  if (s.listener.joinable()) s.listener.join();
}

int Server::port() const { return impl_->port; }
const std::string& Server::model_id() const { return impl_->model_id; }
bool Server::batching() const { return impl_->scheduler && impl_->scheduler->batching(); }

}  // namespace trinity::server
