// Download progress for people: a redrawn bar on a terminal, a few plain lines in logs.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

namespace trinity::hub {

class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  // A download of `total_bytes` (0 = unknown) starts, `start_bytes` of it already on disk.
  virtual void Begin(const std::string& label, uint64_t total_bytes, uint64_t start_bytes) = 0;
  // `done_bytes` of the file are on disk, start_bytes included. Called often: sinks throttle.
  virtual void Update(uint64_t done_bytes) = 0;
  // The download ended (ok = complete) or stopped.
  virtual void End(bool ok) = 0;
};

// Writes to `out`: with `interactive`, one line redrawn with '\r' at most 10 times a second
// ("name  45% [=====>    ] 540.2 MB / 1.19 GB  35.2 MB/s  ETA 0:18"); otherwise a line at
// the start, one per 10% and one at the end.
class ConsoleProgress : public ProgressSink {
 public:
  ConsoleProgress(std::FILE* out, bool interactive);
  void Begin(const std::string& label, uint64_t total_bytes, uint64_t start_bytes) override;
  void Update(uint64_t done_bytes) override;
  void End(bool ok) override;

 private:
  using Clock = std::chrono::steady_clock;
  void Draw(bool final);
  double SessionSeconds() const;

  std::FILE* out_;
  bool interactive_;
  std::string label_;
  uint64_t total_bytes_ = 0;
  uint64_t start_bytes_ = 0;
  uint64_t done_bytes_ = 0;
  Clock::time_point start_time_;
  Clock::time_point last_draw_;
  // Rate over the last few seconds: an exponential moving average of samples 0.5 s apart.
  Clock::time_point rate_sample_time_;
  uint64_t rate_sample_bytes_ = 0;
  double rate_bytes_per_s_ = 0;
  int last_decile_ = -1;
  bool active_ = false;
};

// A ConsoleProgress on stderr, interactive when stderr is a terminal.
std::unique_ptr<ProgressSink> MakeStderrProgress();

// "812 B", "4.1 KB", "540.2 MB", "1.19 GB" (powers of 1000, as download tools print them).
std::string FormatBytes(uint64_t bytes);
// "0:07", "12:34", "1:02:03"; "--:--" for unknown (negative or huge) durations.
std::string FormatDuration(double seconds);

}  // namespace trinity::hub
