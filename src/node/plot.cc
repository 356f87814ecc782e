#include "node/plot.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace trinity::node {

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

std::string FormatValue(double v) { return v >= 100.0 ? fmt::format("{:.0f}", v) : fmt::format("{:.1f}", v); }

// One panel of vertical bars at (x0, y0), width w, height h.
void Panel(std::string& svg, double x0, double y0, double w, double h, std::string_view heading, const char* color,
           const std::vector<std::pair<std::string, double>>& bars) {
  constexpr double kLeft = 50, kBottom = 40, kTop = 30;
  const double plot_w = w - kLeft - 10, plot_h = h - kBottom - kTop;
  const double base_y = y0 + kTop + plot_h;
  double top = 0.0;
  for (const auto& [label, v] : bars) top = std::max(top, v);
  top = NiceMax(top);
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="14" font-weight="bold">{}</text>)" "\n",
                     x0 + kLeft, y0 + 18, Escape(heading));
  for (int i = 0; i <= 4; ++i) {  // grid lines and axis labels
    const double y = base_y - plot_h * i / 4.0;
    svg += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#ddd"/>)" "\n", x0 + kLeft, y,
                       x0 + kLeft + plot_w, y);
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="end">{}</text>)" "\n",
                       x0 + kLeft - 5, y + 4, FormatValue(top * i / 4.0));
  }
  const double slot = bars.empty() ? plot_w : plot_w / static_cast<double>(bars.size());
  for (size_t i = 0; i < bars.size(); ++i) {
    const double v = std::max(bars[i].second, 0.0);
    const double bar_h = plot_h * v / top;
    const double x = x0 + kLeft + slot * static_cast<double>(i) + slot * 0.15;
    svg += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}"/>)" "\n", x,
                       base_y - bar_h, slot * 0.7, bar_h, color);
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="middle">{}</text>)" "\n",
                       x + slot * 0.35, base_y - bar_h - 4, FormatValue(v));
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="12" text-anchor="middle">{}</text>)" "\n",
                       x + slot * 0.35, base_y + 16, Escape(bars[i].first));
  }
  svg += fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#333"/>)" "\n", x0 + kLeft,
                     base_y, x0 + kLeft + plot_w, base_y);
}

}  // namespace

std::string ByTaskChartSvg(const std::vector<std::pair<std::string, StatsSummary>>& by_task, std::string_view title) {
  constexpr double kPanelW = 460, kPanelH = 320, kTitleH = 30;
  std::vector<std::pair<std::string, double>> speed, ttft;
  for (const auto& [name, s] : by_task) {
    speed.emplace_back(name, s.avg_tok_per_s);
    ttft.emplace_back(name, s.ttft_p50_ms);
  }
  std::string svg = fmt::format(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{:.0f}" height="{:.0f}" font-family="sans-serif">)" "\n",
      2 * kPanelW, kPanelH + kTitleH);
  svg += R"(<rect width="100%" height="100%" fill="white"/>)" "\n";
  svg += fmt::format(R"(<text x="10" y="20" font-size="15">{}</text>)" "\n", Escape(title));
  Panel(svg, 0, kTitleH, kPanelW, kPanelH, "Average tok/s by task", "#4878a8", speed);
  Panel(svg, kPanelW, kTitleH, kPanelW, kPanelH, "Time to first token, p50 (ms)", "#d08040", ttft);
  svg += "</svg>\n";
  return svg;
}

}  // namespace trinity::node
