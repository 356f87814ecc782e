#include "hub/progress.h"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace trinity::hub {
namespace {

int TerminalColumns(std::FILE* out) {
  winsize size{};
  if (ioctl(fileno(out), TIOCGWINSZ, &size) == 0 && size.ws_col > 20) return size.ws_col;
  return 80;
}

std::string Rate(double bytes_per_s) { return FormatBytes(static_cast<uint64_t>(bytes_per_s)) + "/s"; }

}  // namespace

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KB", "MB", "GB", "TB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1000 && unit < 4) {
    value /= 1000;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof(text), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(text, sizeof(text), value < 10 ? "%.2f %s" : "%.1f %s", value, kUnits[unit]);
  }
  return text;
}

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0) || seconds > 360000) return "--:--";
  const long total = std::lround(seconds);
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof(text), "%ld:%02ld:%02ld", total / 3600, total / 60 % 60, total % 60);
  } else {
    std::snprintf(text, sizeof(text), "%ld:%02ld", total / 60, total % 60);
  }
  return text;
}

ConsoleProgress::ConsoleProgress(std::FILE* out, bool interactive) : out_(out), interactive_(interactive) {}

double ConsoleProgress::SessionSeconds() const {
  return std::chrono::duration<double>(Clock::now() - start_time_).count();
}

void ConsoleProgress::Begin(const std::string& label, uint64_t total_bytes, uint64_t start_bytes) {
  label_ = label;
  total_bytes_ = total_bytes;
  start_bytes_ = done_bytes_ = rate_sample_bytes_ = start_bytes;
  start_time_ = last_draw_ = rate_sample_time_ = Clock::now();
  rate_bytes_per_s_ = 0;
  active_ = true;
  last_decile_ = total_bytes > 0 ? static_cast<int>(10 * start_bytes / total_bytes) : 0;
  if (interactive_) {
    Draw(false);
    return;
  }
  std::string line =
      "downloading " + label_ + " (" + (total_bytes ? FormatBytes(total_bytes) : "size unknown");
  if (start_bytes > 0) line += ", resuming at " + FormatBytes(start_bytes);
  std::fprintf(out_, "%s)\n", line.c_str());
  std::fflush(out_);
}

void ConsoleProgress::Update(uint64_t done_bytes) {
  if (!active_) return;
  done_bytes_ = done_bytes;
  const Clock::time_point now = Clock::now();
  const double since_sample = std::chrono::duration<double>(now - rate_sample_time_).count();
  if (since_sample >= 0.5) {
    const double rate =
        static_cast<double>(done_bytes - std::min(done_bytes, rate_sample_bytes_)) / since_sample;
    rate_bytes_per_s_ = rate_bytes_per_s_ == 0 ? rate : 0.7 * rate_bytes_per_s_ + 0.3 * rate;
    rate_sample_time_ = now;
    rate_sample_bytes_ = done_bytes;
  }
  if (interactive_) {
    if (now - last_draw_ >= std::chrono::milliseconds(100)) Draw(false);
    return;
  }
  if (total_bytes_ > 0) {
    const int decile = static_cast<int>(10 * std::min(done_bytes, total_bytes_) / total_bytes_);
    if (decile > last_decile_ && decile < 10) {
      last_decile_ = decile;
      Draw(false);
    }
  }
}

void ConsoleProgress::End(bool ok) {
  if (!active_) return;
  active_ = false;
  if (interactive_) {
    Draw(true);
    std::fputc('\n', out_);
  } else {
    const double seconds = SessionSeconds();
    const uint64_t session_bytes = done_bytes_ - std::min(done_bytes_, start_bytes_);
    std::fprintf(out_, "%s %s: %s in %s (%s)\n", ok ? "downloaded" : "stopped", label_.c_str(),
                 FormatBytes(session_bytes).c_str(), FormatDuration(seconds).c_str(),
                 Rate(seconds > 0 ? session_bytes / seconds : 0).c_str());
  }
  std::fflush(out_);
}

void ConsoleProgress::Draw(bool final) {
  last_draw_ = Clock::now();
  const double seconds = SessionSeconds();
  const uint64_t session_bytes = done_bytes_ - std::min(done_bytes_, start_bytes_);
  // The average over the whole session at the end; the recent rate while running.
  const double rate =
      final || rate_bytes_per_s_ == 0 ? (seconds > 0 ? session_bytes / seconds : 0) : rate_bytes_per_s_;
  const double eta = total_bytes_ > done_bytes_ && rate > 0 ? (total_bytes_ - done_bytes_) / rate : -1;
  // Fixed-width fields, so the bar does not jump as the numbers change; a compact form for
  // narrow terminals.
  const bool compact = interactive_ && TerminalColumns(out_) < 90;
  const std::string total = total_bytes_ > 0 ? " / " + FormatBytes(total_bytes_) : "";
  std::string tail;
  if (compact) {
    tail = " " + FormatBytes(done_bytes_) + total + " " + Rate(rate);
    if (!final) tail += " ETA " + FormatDuration(eta);
  } else {
    tail = fmt::format("  {:>9}{}  {:>11}", FormatBytes(done_bytes_), total, Rate(rate));
    if (!final) tail += fmt::format("  ETA {:>7}", FormatDuration(eta));
  }

  if (!interactive_) {
    const int percent = total_bytes_ ? static_cast<int>(100 * done_bytes_ / total_bytes_) : 0;
    std::fprintf(out_, "  %s %3d%%%s\n", label_.c_str(), percent, tail.c_str());
    std::fflush(out_);
    return;
  }
  const int columns = TerminalColumns(out_) - 1;  // the last column would wrap on some terminals
  std::string head = label_;
  std::string percent_text;
  int bar_width = 0;
  if (total_bytes_ > 0) {
    const double fraction = std::min(1.0, static_cast<double>(done_bytes_) / total_bytes_);
    char percent[8];
    std::snprintf(percent, sizeof(percent), " %3d%% ", static_cast<int>(100 * fraction));
    percent_text = percent;
    // Narrow terminal: shorten the name (to 12 characters at least), then drop the bar.
    const int fixed = static_cast<int>(percent_text.size() + tail.size()) + 2;
    const int shortfall = 10 - (columns - fixed - static_cast<int>(head.size()));
    if (shortfall > 0 && head.size() > 12) {
      head = head.substr(0, std::max<int>(11, static_cast<int>(head.size()) - shortfall - 1)) + "~";
    }
    bar_width = std::clamp(columns - fixed - static_cast<int>(head.size()), 0, 40);
    if (bar_width >= 5) {
      std::string bar(bar_width, ' ');
      const int filled = static_cast<int>(fraction * bar_width);
      std::fill(bar.begin(), bar.begin() + filled, '=');
      if (filled < bar_width) bar[filled] = '>';
      percent_text += "[" + bar + "]";
    }
  }
  std::string line = head + percent_text + tail;
  if (static_cast<int>(line.size()) > columns) line.resize(columns);
  // \r, then the line, then erase whatever a longer previous line left on the right.
  std::fprintf(out_, "\r%s\x1b[K", line.c_str());
  std::fflush(out_);
}

std::unique_ptr<ProgressSink> MakeStderrProgress() {
  return std::make_unique<ConsoleProgress>(stderr, isatty(fileno(stderr)) != 0);
}

}  // namespace trinity::hub
