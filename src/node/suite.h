// Benchmark suites: a list of task requests kept in a JSON file (data/bench/seed_suite.json).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "node/node.h"

namespace trinity::node {

struct Suite {
  std::string name;
  std::vector<TaskRequest> requests;
};

// Format: {"name": "seed", "requests": [{"task": "qa", "input": "...", "max_tokens": 50}, ...]}
// (max_tokens optional). Throws trinity::Error naming the file and the request for anything
// malformed; task names are checked against `tasks` when given.
Suite LoadSuite(const std::string& path, const TaskRegistry* tasks = nullptr);
Suite ParseSuite(std::string_view json_text, const std::string& origin, const TaskRegistry* tasks = nullptr);

// The seed report's 10-request benchmark, installed with the sources.
std::string DefaultSuitePath();

}  // namespace trinity::node
