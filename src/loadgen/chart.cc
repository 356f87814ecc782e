// LoadChartSvg: hand-written SVG line charts (no plotting library; any browser shows them), in the
// manner of node/plot.cc. Concurrency levels are evenly spaced categories on the x axis.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "loadgen/loadgen.h"

namespace trinity::loadgen {

namespace {

std::string Escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A "nice" axis maximum (1, 2 or 5 times a power of ten) at or above `value`.
double NiceMax(double value) {
  if (!(value > 0.0)) return 1.0;
  const double p = std::pow(10.0, std::floor(std::log10(value)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= value) return m * p;
  }
  return 10.0 * p;
}

std::string FormatValue(double v) {
  if (v == 0.0) return "0";
  return v >= 100.0 ? fmt::format("{:.0f}", v) : v >= 10.0 ? fmt::format("{:.1f}", v) : fmt::format("{:.2f}", v);
}

struct Series {
  std::string name;
  const char* color;
  std::vector<double> values;  // one per x category
  bool dashed = false;
};

// One panel of line series at (x0, y0), width w, height h; `xs` label the categories.
void Panel(std::string& svg, double x0, double y0, double w, double h, std::string_view heading,
           const std::vector<std::string>& xs, const std::vector<Series>& series) {
  constexpr double kLeft = 55, kRight = 15, kBottom = 45, kTop = 30, kLegend = 16;
  const double plot_w = w - kLeft - kRight;
  const double plot_h = h - kBottom - kTop - kLegend * static_cast<double>(series.size());
  const double base_y = y0 + kTop + plot_h;
  double top = 0.0;
  for (const Series& s : series) {
    for (double v : s.values) top = std::max(top, v);
  }
  top = NiceMax(top);
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="14" font-weight="bold">{}</text>)" "\n", x0 + kLeft,
                     y0 + 18, Escape(heading));
  for (int i = 0; i <= 4; ++i) {
    const double y = base_y - plot_h * i / 4.0;
    svg += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#ddd"/>)" "\n", x0 + kLeft, y,
                       x0 + kLeft + plot_w, y);
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="end">{}</text>)" "\n",
                       x0 + kLeft - 5, y + 4, FormatValue(top * i / 4.0));
  }
  constexpr double kInset = 20;  // the first and last level off the axes
  const double step = xs.size() > 1 ? (plot_w - 2 * kInset) / static_cast<double>(xs.size() - 1) : 0.0;
  auto x_at = [&](size_t i) {
    return x0 + kLeft + (xs.size() > 1 ? kInset + step * static_cast<double>(i) : plot_w / 2);
  };
  for (size_t i = 0; i < xs.size(); ++i) {
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="12" text-anchor="middle">{}</text>)" "\n", x_at(i),
                       base_y + 16, Escape(xs[i]));
  }
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="middle">concurrency</text>)" "\n",
                     x0 + kLeft + plot_w / 2, base_y + 32);
  svg += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#333"/>)" "\n", x0 + kLeft,
                     base_y, x0 + kLeft + plot_w, base_y);
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    std::string points;
    for (size_t i = 0; i < s.values.size() && i < xs.size(); ++i) {
      const double y = base_y - plot_h * std::max(s.values[i], 0.0) / top;
      points += fmt::format("{:.1f},{:.1f} ", x_at(i), y);
      svg += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="{}"/>)" "\n", x_at(i), y, s.color);
    }
    svg += fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{}/>)" "\n", points, s.color,
                       s.dashed ? R"( stroke-dasharray="5,3")" : "");
    const double ly = base_y + kBottom + kLegend * static_cast<double>(k);
    svg += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="{}" stroke-width="2"{}/>)" "\n",
                       x0 + kLeft, ly - 4, x0 + kLeft + 24, ly - 4, s.color,
                       s.dashed ? R"( stroke-dasharray="5,3")" : "");
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11">{}</text>)" "\n", x0 + kLeft + 30, ly,
                       Escape(s.name));
  }
}

}  // namespace

std::string LoadChartSvg(const std::vector<LoadSummary>& levels, std::string_view title) {
  constexpr double kPanelW = 420, kPanelH = 380, kTitleH = 30;
  std::vector<std::string> xs;
  Series tok_s{"output tokens/s", "#4878a8", {}}, req_s{"requests/s", "#4878a8", {}};
  Series ttft50{"TTFT p50", "#d08040", {}}, ttft99{"TTFT p99", "#d08040", {}, true};
  Series e2e50{"end-to-end p50", "#5a9a50", {}}, e2e99{"end-to-end p99", "#5a9a50", {}, true};
  Series tpot50{"TPOT p50", "#8a5aa8", {}}, tpot99{"TPOT p99", "#8a5aa8", {}, true};
  for (const LoadSummary& s : levels) {
    xs.push_back(std::to_string(s.concurrency));
    tok_s.values.push_back(s.output_tok_per_s);
    req_s.values.push_back(s.requests_per_s);
    ttft50.values.push_back(s.ttft_ms.p50);
    ttft99.values.push_back(s.ttft_ms.p99);
    e2e50.values.push_back(s.e2e_ms.p50);
    e2e99.values.push_back(s.e2e_ms.p99);
    tpot50.values.push_back(s.tpot_ms.p50);
    tpot99.values.push_back(s.tpot_ms.p99);
  }
  std::string svg = fmt::format(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{:.0f}" height="{:.0f}" font-family="sans-serif">)" "\n",
      4 * kPanelW, kPanelH + kTitleH);
  svg += R"(<rect width="100%" height="100%" fill="white"/>)" "\n";
  svg += fmt::format(R"(<text x="10" y="20" font-size="15">{}</text>)" "\n", Escape(title));
  Panel(svg, 0, kTitleH, kPanelW, kPanelH, "Output tokens/s", xs, {tok_s});
  Panel(svg, kPanelW, kTitleH, kPanelW, kPanelH, "Requests/s", xs, {req_s});
  Panel(svg, 2 * kPanelW, kTitleH, kPanelW, kPanelH, "Latency (ms)", xs, {ttft50, ttft99, e2e50, e2e99});
  Panel(svg, 3 * kPanelW, kTitleH, kPanelW, kPanelH, "Time per output token (ms)", xs, {tpot50, tpot99});
  svg += "</svg>\n";
  return svg;
}

}  // namespace trinity::loadgen
