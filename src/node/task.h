// Task types: a prompt template, a default token limit, stop strings and how the answer is taken.
//
// The five tasks of the seed report are declared once, in kBuiltinTasks (task.cc); more can be
// declared in a JSON file (TaskRegistry::LoadFile). Everything else (help text, validation,
// tables) is derived from the registry.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trinity::node {

// How a task's answer is produced.
enum class AnswerKind {
  kGenerate,   // free text, up to max_tokens
  kLabel,      // one of `labels`, scored by likelihood after one prefill (no sampling)
  kFirstWord,  // one word: generation stops at the first complete word
};
const char* AnswerKindName(AnswerKind kind);  // "generate" | "label" | "first_word"

struct TaskSpec {
  std::string name;              // request key: "sentiment"
  std::string display_name;      // tables: "Sentiment"
  std::string prompt_template;   // contains "{input}"
  int32_t default_max_tokens = 0;
  std::vector<std::string> stop;    // stop strings (besides end of turn / end of text)
  std::vector<std::string> labels;  // kLabel only: the answers, lower case as returned
  AnswerKind answer = AnswerKind::kGenerate;
};

// The prompt text for `input`: every "{input}" of the template replaced.
std::string FillTemplate(const TaskSpec& spec, std::string_view input);

class TaskRegistry {
 public:
  // The seed's five tasks: generation, qa, sentiment, topic, summarize.
  static TaskRegistry Builtin();

  // Reads task declarations from a JSON file and adds them (a task with a built-in name replaces
  // it). Throws trinity::Error naming the file, the task and the field for anything malformed.
  // Format: {"tasks": [{"name": "translate", "template": "...{input}...", "max_tokens": 40,
  //          "display_name": "Translate", "stop": ["\n"], "labels": ["yes", "no"],
  //          "answer": "generate" | "label" | "first_word"}]}
  // Only name, template and max_tokens are required; with labels the answer defaults to "label".
  void LoadFile(const std::string& path);
  // The same from JSON text (`origin` names it in errors).
  void LoadJson(std::string_view text, const std::string& origin);

  void Add(TaskSpec spec);  // validates; replaces a task of the same name
  // Throws trinity::Error "unknown task "x" (known: generation, qa, ...)".
  const TaskSpec& Get(std::string_view name) const;
  const TaskSpec* Find(std::string_view name) const;
  const std::vector<TaskSpec>& tasks() const { return tasks_; }
  std::string Names() const;  // "generation, qa, sentiment, topic, summarize"

 private:
  std::vector<TaskSpec> tasks_;  // declaration order
};

}  // namespace trinity::node
