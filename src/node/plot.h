// A hand-written SVG chart of the by-task statistics: average tok/s and median time to first
// token per task type, as two bar panels (no plotting library; any browser shows it).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "node/stats.h"

namespace trinity::node {

// `by_task`: (label shown under the bars, summary), e.g. Stats::ByTask() with display names.
std::string ByTaskChartSvg(const std::vector<std::pair<std::string, StatsSummary>>& by_task, std::string_view title);

}  // namespace trinity::node
