// Task declarations: the seed's templates and limits, config-declared tasks and their errors,
// benchmark suites.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/common/error.h"
#include "node/suite.h"
#include "node/task.h"

namespace trinity::node {
namespace {

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(NodeTask, SeedTemplatesAndLimits) {
  const TaskRegistry tasks = TaskRegistry::Builtin();
  ASSERT_EQ(tasks.Names(), "generation, qa, sentiment, topic, summarize");
  struct Want {
    const char* name;
    const char* prompt;  // template filled with "X"
    int32_t max_tokens;
    AnswerKind answer;
  };
  const Want want[] = {
      {"generation", "Continue this text:\nX\n\nContinuation:", 100, AnswerKind::kGenerate},
      {"qa", "Answer concisely:\nX\n\nAnswer:", 50, AnswerKind::kGenerate},
      {"sentiment", "Analyze sentiment (positive/negative/neutral):\nX\n\nSentiment:", 20, AnswerKind::kLabel},
      {"topic", "Main topic in one word:\nX\n\nTopic:", 10, AnswerKind::kFirstWord},
      {"summarize", "Summarize in one sentence:\nX\n\nSummary:", 50, AnswerKind::kGenerate},
  };
  for (const Want& w : want) {
    const TaskSpec& spec = tasks.Get(w.name);
    EXPECT_EQ(FillTemplate(spec, "X"), w.prompt) << w.name;
    EXPECT_EQ(spec.default_max_tokens, w.max_tokens) << w.name;
    EXPECT_EQ(spec.answer, w.answer) << w.name;
  }
  EXPECT_EQ(tasks.Get("sentiment").labels, (std::vector<std::string>{"positive", "negative", "neutral"}));
  EXPECT_EQ(tasks.Get("qa").display_name, "QA");
}

TEST(NodeTask, FillTemplateReplacesEveryPlaceholderAndNothingElse) {
  TaskSpec spec;
  spec.prompt_template = "A {input} B {input} {inpu}";
  EXPECT_EQ(FillTemplate(spec, "{input}x"), "A {input}x B {input}x {inpu}");
}

TEST(NodeTask, UnknownTaskNamesTheKnownOnes) {
  const TaskRegistry tasks = TaskRegistry::Builtin();
  EXPECT_EQ(tasks.Find("translate"), nullptr);
  EXPECT_EQ(ErrorOf([&] { tasks.Get("translate"); }),
            "unknown task \"translate\" (known: generation, qa, sentiment, topic, summarize)");
}

TEST(NodeTask, ConfigDeclaresTasks) {
  TaskRegistry tasks = TaskRegistry::Builtin();
  tasks.LoadJson(R"({"tasks": [
      {"name": "translate", "template": "Translate to French:\n{input}\n\nFrench:", "max_tokens": 40,
       "stop": ["\n"]},
      {"name": "spam", "display_name": "Spam?", "template": "Is this spam (yes/no)?\n{input}\n\nAnswer:",
       "max_tokens": 3, "labels": ["yes", "no"]},
      {"name": "qa", "template": "Q: {input}\nA:", "max_tokens": 7}]})",
                 "test.json");
  EXPECT_EQ(tasks.Names(), "generation, qa, sentiment, topic, summarize, translate, spam");
  const TaskSpec& translate = tasks.Get("translate");
  EXPECT_EQ(translate.display_name, "Translate");
  EXPECT_EQ(translate.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(translate.answer, AnswerKind::kGenerate);
  EXPECT_EQ(translate.default_max_tokens, 40);
  const TaskSpec& spam = tasks.Get("spam");
  EXPECT_EQ(spam.answer, AnswerKind::kLabel);  // labels imply label answers
  EXPECT_EQ(spam.labels, (std::vector<std::string>{"yes", "no"}));
  EXPECT_EQ(spam.display_name, "Spam?");
  EXPECT_EQ(FillTemplate(tasks.Get("qa"), "x"), "Q: x\nA:");  // replaced the built-in
  EXPECT_EQ(tasks.Get("qa").default_max_tokens, 7);
}

TEST(NodeTask, ConfigFileFromDisk) {
  const std::string path = (std::filesystem::temp_directory_path() / "node_task_test_config.json").string();
  {
    std::ofstream out(path);
    out << R"({"tasks": [{"name": "keywords", "template": "Keywords:\n{input}\n", "max_tokens": 12,
              "answer": "first_word"}]})";
  }
  TaskRegistry tasks = TaskRegistry::Builtin();
  tasks.LoadFile(path);
  EXPECT_EQ(tasks.Get("keywords").answer, AnswerKind::kFirstWord);
  std::remove(path.c_str());
  EXPECT_EQ(ErrorOf([&] { tasks.LoadFile(path); }), "cannot open task config " + path);
}

TEST(NodeTask, BadConfigFilesGiveClearErrors) {
  struct Case {
    const char* json;
    const char* error;  // expected substring
  };
  const Case cases[] = {
      {"{", "cfg.json: not valid JSON"},
      {"[]", "cfg.json: expected an object with a \"tasks\" array"},
      {R"({"tasks": []})", "\"tasks\" must be a non-empty array"},
      {R"({"tasks": [], "extra": 1})", "unknown key \"extra\""},
      {R"({"tasks": [{"template": "{input}", "max_tokens": 3}]})", "tasks[0]: missing \"name\""},
      {R"({"tasks": [{"name": "a", "max_tokens": 3}]})", "tasks[0] (\"a\"): missing \"template\""},
      {R"({"tasks": [{"name": "a", "template": "{input}"}]})", "missing \"max_tokens\""},
      {R"({"tasks": [{"name": "a", "template": "no placeholder", "max_tokens": 3}]})",
       "task \"a\": the template must contain {input}"},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 0}]})",
       "\"max_tokens\" must be between 1 and"},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": "5"}]})",
       "\"max_tokens\" must be an integer"},
      {R"({"tasks": [{"name": "A b", "template": "{input}", "max_tokens": 3}]})",
       "names use lower-case letters, digits"},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 3, "stop": [""]}]})",
       "stop strings must not be empty"},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 3, "stop": "x"}]})",
       "\"stop\" must be an array of strings"},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 3, "labels": ["x"]}]})",
       "a label task needs at least two labels"},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 3, "labels": ["x", "x"]}]})",
       "label \"x\" is declared twice"},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 3, "labels": ["x", 2]}]})",
       "\"labels\" must be an array of strings"},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 3, "answer": "guess"}]})",
       "\"answer\" must be \"generate\", \"label\" or \"first_word\""},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 3, "labels": ["x", "y"],
           "answer": "generate"}]})",
       "labels are only used with \"answer\": \"label\""},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 3, "temp": 1}]})",
       "unknown key \"temp\""},
      {R"({"tasks": [{"name": "a", "template": "{input}", "max_tokens": 3},
                     {"name": "a", "template": "{input}", "max_tokens": 4}]})",
       "task \"a\" is declared twice"},
  };
  for (const Case& c : cases) {
    TaskRegistry tasks = TaskRegistry::Builtin();
    const std::string error = ErrorOf([&] { tasks.LoadJson(c.json, "cfg.json"); });
    EXPECT_NE(error.find(c.error), std::string::npos) << c.json << "\n  got: " << error;
    EXPECT_NE(error.find("cfg.json"), std::string::npos) << error;
    EXPECT_EQ(tasks.Names(), "generation, qa, sentiment, topic, summarize") << "a bad file changes nothing";
  }
}

TEST(NodeSuite, SeedSuiteHasTheReportsTaskMix) {
  const TaskRegistry tasks = TaskRegistry::Builtin();
  const Suite suite = LoadSuite(TRINITY_SOURCE_DIR "/data/bench/seed_suite.json", &tasks);
  ASSERT_EQ(suite.requests.size(), 10u);
  const char* want[] = {"generation", "generation", "qa", "qa", "qa", "sentiment", "sentiment", "topic", "topic",
                        "summarize"};
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(suite.requests[i].task, want[i]);
    EXPECT_FALSE(suite.requests[i].input.empty());
    EXPECT_EQ(suite.requests[i].input.find("..."), std::string::npos) << "inputs are completed";
  }
  EXPECT_EQ(suite.requests[0].input, "The future of AI is");
  EXPECT_EQ(suite.requests[6].input, "The slow speed is disappointing.");
}

TEST(NodeSuite, BadSuites) {
  const TaskRegistry tasks = TaskRegistry::Builtin();
  EXPECT_NE(ErrorOf([&] { ParseSuite(R"({"requests": [{"task": "poem", "input": "x"}]})", "s.json", &tasks); })
                .find("s.json: requests[0]: unknown task \"poem\""),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { ParseSuite(R"({"requests": [{"task": "qa"}]})", "s.json"); }).find("missing \"input\""),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { ParseSuite(R"({"requests": [{"task": "qa", "input": "x", "max_tokens": -1}]})", "s.json"); })
                .find("\"max_tokens\" must be a positive integer"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { ParseSuite(R"({"requests": []})", "s.json"); }).find("\"requests\" is empty"),
            std::string::npos);
  const Suite ok = ParseSuite(R"({"requests": [{"task": "qa", "input": "x", "max_tokens": 3}]})", "s.json", &tasks);
  EXPECT_EQ(ok.requests.at(0).max_tokens, 3);
}

}  // namespace
}  // namespace trinity::node
