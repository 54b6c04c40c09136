// llm_batch: its parts on plain values, then whole runs over loopback HTTP
// against the in-process mock_upstream server (each on a free port), then the
// program itself for its flags and exit statuses.
#include "support/catch.hpp"

#include "batch.hpp"

#include "../common/flags.hpp"
#include "mock_upstream.hpp"
#include "support/process.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace fs = std::filesystem;

// A write to a connection the server closed must be an error to retry, not a crash.
const bool sigpipe_ignored = [] { return std::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

/// A fresh directory, removed at scope exit.
struct temp_dir {
    temp_dir() {
        static std::atomic<int> counter{0};
        path = fs::temp_directory_path() /
               ("llm_batch_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    [[nodiscard]] std::string file(const std::string& name) const { return (path / name).string(); }
    fs::path path;
};

/// One OpenAI Batch input line (with its '\n') asking for at most `max_tokens`.
std::string chat_line(const std::string& custom_id, const std::string& content, int max_tokens = 16) {
    const json line = {{"custom_id", custom_id},
                       {"method", "POST"},
                       {"url", "/v1/chat/completions"},
                       {"body", {{"model", "gpt-test"},
                                 {"messages", json::array({{{"role", "user"}, {"content", content}}})},
                                 {"max_tokens", max_tokens}}}};
    return line.dump() + "\n";
}

void write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

/// `n` lines with custom_ids req-0 .. req-(n-1).
void write_batch(const std::string& path, int n) {
    std::string text;
    for (int i = 0; i < n; ++i) text += chat_line("req-" + std::to_string(i), "question " + std::to_string(i));
    write_file(path, text);
}

/// Every line of an output file, each required to be a whole JSON record.
std::vector<json> read_records(const std::string& path) {
    std::vector<json> records;
    std::ifstream in(path, std::ios::binary);
    std::string line;
    while (std::getline(in, line)) {
        const json record = json::parse(line, nullptr, false);
        REQUIRE_FALSE(record.is_discarded());
        records.push_back(record);
    }
    return records;
}

/// custom_id -> number of records with it.
std::map<std::string, int> ids_of(const std::vector<json>& records) {
    std::map<std::string, int> ids;
    for (const json& r : records) ++ids[r.at("custom_id").get<std::string>()];
    return ids;
}

/// A mock with no latency to speak of and limits far above what a test sends.
mock_upstream::config generous_mock() {
    mock_upstream::config c;
    c.port = 0;
    c.min_latency_ms = 0;
    c.max_latency_ms = 5;
    c.requests_per_minute = 600'000;
    c.tokens_per_minute = 100'000'000;
    return c;
}

/// Options for a run against 127.0.0.1:port, quiet and with short retry delays.
llm_batch::options test_options(const temp_dir& dir, int port) {
    llm_batch::options o;
    o.input_path = dir.file("in.jsonl");
    o.output_path = dir.file("out.jsonl");
    o.base_url = "http://127.0.0.1:" + std::to_string(port);
    o.concurrency = 8;
    o.progress = false;
    o.diagnostics = nullptr;
    o.connect_timeout = 2s;
    o.read_timeout = 10s;
    o.backoff_initial = 5ms;
    o.backoff_max = 50ms;
    return o;
}

/// Runs a shell command; returns its exit status.
int run_command(const std::string& command) {
    const int status = std::system(command.c_str());
    REQUIRE(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/// A server that answers every chat request 200 and remembers the Authorization headers.
struct capture_server {
    capture_server() {
        server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
            {
                std::lock_guard lock(mutex);
                authorization.push_back(req.get_header_value("Authorization"));
            }
            res.set_content(R"({"id":"chatcmpl-1","usage":{"prompt_tokens":3,"completion_tokens":2}})", "application/json");
        });
        port = server.bind_to_any_port("127.0.0.1");
        thread = std::thread([this] { server.listen_after_bind(); });
        while (!server.is_running()) std::this_thread::sleep_for(1ms);
    }
    ~capture_server() {
        server.stop();
        thread.join();
    }
    httplib::Server server;
    int port = 0;
    std::thread thread;
    std::mutex mutex;
    std::vector<std::string> authorization;
};

}  // namespace

// ---------------------------------------------------------------------------
// Parts on plain values
// ---------------------------------------------------------------------------

TEST_CASE("the cost is estimate_tokens per message + 4 as input and max_tokens as output", "[llm_batch]") {
    const llm_batch::json body = llm_batch::json::parse(
        R"({"messages": [{"role": "system", "content": "abcdef"}, {"role": "user", "content": [{"type": "text", "text": "abc"}]}],
            "max_tokens": 10})");
    const auto cost = llm_batch::estimate_cost(body, "/v1/chat/completions", 256);
    // estimate_tokens("abcdef") = (6 + 2) / 3 + 1 = 3, estimate_tokens("abc") = (3 + 2) / 3 + 1 = 2
    CHECK(cost.input_tokens == (3 + 4) + (2 + 4));
    CHECK(cost.max_output_tokens == 10);
}

TEST_CASE("max_completion_tokens wins over max_tokens, n multiplies it, and 256 is the default", "[llm_batch]") {
    using llm_batch::json;
    const auto output = [](const char* body) {
        return llm_batch::estimate_cost(json::parse(body), "/v1/chat/completions", 256).max_output_tokens;
    };
    CHECK(output(R"({"messages": [], "max_tokens": 10, "max_completion_tokens": 20})") == 20);
    CHECK(output(R"({"messages": [], "max_tokens": 10, "n": 3})") == 30);
    CHECK(output(R"({"messages": []})") == 256);
    CHECK(llm_batch::estimate_cost(json::parse(R"({"input": "abcdef"})"), "/v1/embeddings", 256).max_output_tokens == 0);
    CHECK(llm_batch::estimate_cost(json::parse(R"({"input": "abcdef"})"), "/v1/embeddings", 256).input_tokens == 3);
}

TEST_CASE("usage is read from OpenAI or Anthropic field names, and is absent when the body has none", "[llm_batch]") {
    using llm_batch::json;
    const auto openai = llm_batch::usage_of(json::parse(R"({"usage": {"prompt_tokens": 12, "completion_tokens": 5}})"));
    REQUIRE(openai);
    CHECK(openai->input_tokens == 12);
    CHECK(openai->output_tokens == 5);
    const auto anthropic = llm_batch::usage_of(json::parse(R"({"usage": {"input_tokens": 7, "output_tokens": 9}})"));
    REQUIRE(anthropic);
    CHECK(anthropic->total() == 16);
    CHECK_FALSE(llm_batch::usage_of(json::parse(R"({"id": "x"})")));
    CHECK_FALSE(llm_batch::usage_of(json("not an object")));
}

TEST_CASE("input lines are parsed into requests or named errors", "[llm_batch]") {
    const auto good = llm_batch::parse_input_line(
        R"({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}})", 1);
    CHECK_FALSE(good.error);
    CHECK(good.custom_id == "a");
    CHECK(good.url == "/v1/chat/completions");

    const auto code = [](std::string_view text) {
        const auto line = llm_batch::parse_input_line(text, 7);
        return line.error ? line.error->code : std::string("none");
    };
    CHECK(code("{not json") == "invalid_json");
    CHECK(code("[1, 2]") == "invalid_request");
    CHECK(code(R"({"url": "/v1/chat/completions", "body": {}})") == "missing_custom_id");
    CHECK(code(R"({"custom_id": 5, "url": "/v1/chat/completions", "body": {}})") == "missing_custom_id");
    CHECK(code(R"({"custom_id": "a", "url": "/v1/chat/completions"})") == "missing_body");
    CHECK(code(R"({"custom_id": "a", "url": "v1/chat", "body": {}})") == "invalid_request");
    CHECK(code(R"({"custom_id": "a", "method": "GET", "url": "/v1/models", "body": {}})") == "invalid_request");
    CHECK(code(R"({"custom_id": "a", "url": "/v1/chat/completions", "body": {"stream": true}})") == "invalid_request");
    CHECK(code(std::string(1000, '[') + std::string(1000, ']')) == "invalid_json");  // never recursed into
    CHECK(llm_batch::parse_input_line("{oops", 7).custom_id == "line-7");
}

TEST_CASE("a record carries id, custom_id, response and error in that order", "[llm_batch]") {
    std::mt19937_64 rng(1);
    const std::string id = llm_batch::make_record_id(rng);
    CHECK(id.rfind("batch_req_", 0) == 0);
    CHECK(id.size() == 10 + 32);

    const llm_batch::response_info response{200, "req_1", llm_batch::json::parse(R"({"b": 1, "a": 2})")};
    const std::string ok = llm_batch::output_line(id, "c1", 4, response, std::nullopt);
    CHECK(ok == "{\"id\":\"" + id + R"(","custom_id":"c1","response":{"status_code":200,"request_id":"req_1","body":{"b":1,"a":2}},"error":null,"line":4})" "\n");

    const std::string failed = llm_batch::output_line(id, "c2", 5, std::nullopt, llm_batch::record_error{"invalid_json", "bad"});
    CHECK(failed == "{\"id\":\"" + id + R"(","custom_id":"c2","response":null,"error":{"code":"invalid_json","message":"bad"},"line":5})" "\n");

    // Invalid UTF-8 from the network is replaced, not thrown on.
    const llm_batch::response_info hostile{200, "", llm_batch::json(std::string("\xff\xfe"))};
    CHECK_NOTHROW(llm_batch::output_line(id, "c3", 6, hostile, std::nullopt));
}

TEST_CASE("a resume scan counts whole records, failures and a torn tail", "[llm_batch]") {
    temp_dir dir;
    const std::string ok = R"({"id":"r1","custom_id":"a","response":{"status_code":200},"error":null})" "\n";
    const std::string bad = R"({"id":"r2","custom_id":"b","response":null,"error":{"code":"x","message":"y"}})" "\n";
    const std::string junk = "not a record\n";
    const std::string torn = R"({"id":"r3","custom_id":"c","resp)";
    write_file(dir.file("out.jsonl"), ok + bad + ok + junk + torn);

    const llm_batch::resume_state s = llm_batch::scan_output(dir.file("out.jsonl"));
    CHECK(s.total == 3);
    CHECK(s.failed == 1);
    CHECK(s.records.at("a") == 2);
    CHECK(s.records.at("b") == 1);
    CHECK(s.records.count("c") == 0);
    CHECK(s.unreadable == 1);
    CHECK(s.torn_tail);
    CHECK(s.valid_bytes == ok.size() + bad.size() + ok.size() + junk.size());
    CHECK(llm_batch::scan_output(dir.file("missing.jsonl")).total == 0);
}

TEST_CASE("backoff doubles from the initial delay up to the cap, jittered into [1/2, 1] of it", "[llm_batch]") {
    using std::chrono::milliseconds;
    CHECK(llm_batch::backoff_delay(1, 500ms, 30s, 0.0) == milliseconds(250));   // 500 · 2^0 · 0.5
    CHECK(llm_batch::backoff_delay(3, 500ms, 30s, 0.0) == milliseconds(1000));  // 500 · 2^2 · 0.5
    CHECK(llm_batch::backoff_delay(3, 500ms, 30s, 0.5) == milliseconds(1500));  // 500 · 2^2 · 0.75
    CHECK(llm_batch::backoff_delay(10, 500ms, 30s, 0.0) == milliseconds(15000));  // capped: 30000 · 0.5
    CHECK(llm_batch::backoff_delay(1000, 500ms, 30s, 0.0) == milliseconds(15000));
    CHECK(llm_batch::retryable_status(429));
    CHECK(llm_batch::retryable_status(503));
    CHECK_FALSE(llm_batch::retryable_status(400));
    CHECK_FALSE(llm_batch::retryable_status(404));
}

TEST_CASE("the base URL splits into an origin and a path prefix", "[llm_batch]") {
    const auto plain = llm_batch::parse_base_url("http://127.0.0.1:8080");
    REQUIRE(plain);
    CHECK(plain->origin == "http://127.0.0.1:8080");
    CHECK(plain->path_prefix.empty());
    const auto prefixed = llm_batch::parse_base_url("https://llm.example/openai/");
    REQUIRE(prefixed);
    CHECK(prefixed->origin == "https://llm.example");
    CHECK(prefixed->path_prefix == "/openai");
    CHECK_FALSE(llm_batch::parse_base_url("127.0.0.1:8080"));
    CHECK_FALSE(llm_batch::parse_base_url("ftp://host"));
    CHECK_FALSE(llm_batch::parse_base_url("http://"));
}

TEST_CASE("the progress line shows done/total, rates, 429s and the time left", "[llm_batch]") {
    // 30 of 120 done in 10 s: 3 req/s, 90 left -> 30 s; 5000 tokens / 10 s = 500 tok/s
    const std::string plain = llm_batch::progress_text(30, 120, 30, 5000, 2, 10.0, 0);
    CHECK(plain == "llm_batch: 30/120  25%  3.0 req/s  500 tok/s  429s 2  ETA 30.0 s");
    const std::string bar = llm_batch::progress_text(60, 120, 30, 5000, 0, 10.0, 10);
    CHECK(bar.rfind("llm_batch: [#####.....] 60/120", 0) == 0);
}

// ---------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------

namespace {

struct parsed_flags {
    std::string input;
    std::int64_t rpm = 0;
    int concurrency = 16;
    bool resume = false;
};

/// Parses `args` with a small flag set; returns the error message, or "" when it parsed.
std::string parse(std::vector<const char*> args, parsed_flags& out) {
    examples::flags::parser p("prog", "test");
    p.text("input", out.input, "FILE", "input").required();
    p.integer<std::int64_t>("rpm", out.rpm, "N", "rpm", 0, 1000);
    p.integer("concurrency", out.concurrency, "N", "workers", 1, 64);
    p.toggle("resume", out.resume, "resume");
    args.insert(args.begin(), "prog");
    try {
        return p.parse(static_cast<int>(args.size()), args.data()) == examples::flags::outcome::help ? "help" : "";
    } catch (const examples::flags::usage_error& e) {
        return e.what();
    }
}

}  // namespace

TEST_CASE("flags parse GNU style: --name value, --name=value and toggles", "[llm_batch][flags]") {
    parsed_flags f;
    CHECK(parse({"--input", "a.jsonl", "--rpm=600", "--resume", "--concurrency", "4"}, f).empty());
    CHECK(f.input == "a.jsonl");
    CHECK(f.rpm == 600);
    CHECK(f.resume);
    CHECK(f.concurrency == 4);
}

TEST_CASE("bad flags are named in one line", "[llm_batch][flags]") {
    parsed_flags f;
    CHECK(parse({"--input", "a", "--bogus"}, f) == "unknown flag '--bogus'");
    CHECK(parse({"--input"}, f) == "--input needs a value (FILE)");
    CHECK(parse({"--input", "--resume"}, f) == "--input needs a value (FILE)");
    CHECK(parse({"--input", "a", "--rpm", "12x"}, f) == "--rpm: expected an integer, got '12x'");
    CHECK(parse({"--input", "a", "--rpm", "-1"}, f) == "--rpm: must be in [0, 1000], got -1");
    CHECK(parse({"--input", "a", "--rpm", "99999999999999999999"}, f) ==
          "--rpm: must be in [0, 1000], got 99999999999999999999");
    CHECK(parse({"--input", "a", "--resume=yes"}, f) == "--resume takes no value");
    CHECK(parse({"--rpm", "5"}, f) == "--input is required");
    CHECK(parse({"--input", "a", "stray"}, f) == "unexpected argument 'stray' (flags are --name value)");
    CHECK(parse({"--bogus", "--help"}, f) == "help");
}

// ---------------------------------------------------------------------------
// Runs against the mock over loopback HTTP
// ---------------------------------------------------------------------------

TEST_CASE("a small batch under generous limits all succeeds, one record per line", "[llm_batch][http]") {
    mock_upstream::server mock(generous_mock());
    const int port = mock.start();
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 60);

    const llm_batch::summary s = llm_batch::run(test_options(dir, port));
    CHECK(s.requests == 60);
    CHECK(s.succeeded == 60);
    CHECK(s.failed == 0);
    CHECK(s.exit_status() == 0);

    const std::vector<json> records = read_records(dir.file("out.jsonl"));
    REQUIRE(records.size() == 60);
    const auto ids = ids_of(records);
    REQUIRE(ids.size() == 60);
    for (int i = 0; i < 60; ++i) CHECK(ids.count("req-" + std::to_string(i)) == 1);
    for (const json& r : records) {
        CHECK(r.at("id").get<std::string>().rfind("batch_req_", 0) == 0);
        CHECK(r.at("error").is_null());
        CHECK(r.at("response").at("status_code") == 200);
        CHECK(r.at("response").at("request_id").get<std::string>().rfind("req_mock_", 0) == 0);
        CHECK(r.at("response").at("body").at("object") == "chat.completion");
    }
    CHECK(mock.totals().requests_total == 60);
    CHECK(s.prompt_tokens + s.completion_tokens == mock.totals().tokens_used);
}

TEST_CASE("malformed lines become error records and the rest succeed", "[llm_batch][http]") {
    mock_upstream::server mock(generous_mock());
    const int port = mock.start();
    temp_dir dir;
    write_file(dir.file("in.jsonl"),
               chat_line("a", "first") +                                                              // 1
               "{not json\n" +                                                                        // 2
               R"({"method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}})" "\n"  // 3
               R"({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions"})" "\n"          // 4
               "\n" +                                                                                 // 5: blank, skipped
               chat_line("a", "again") +                                                              // 6
               "[1, 2]\n" +                                                                           // 7
               chat_line("c", "third") +                                                              // 8
               R"({"custom_id": "e", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}})" "\n");  // 9

    const llm_batch::summary s = llm_batch::run(test_options(dir, port));
    CHECK(s.requests == 8);
    CHECK(s.succeeded == 2);  // a, c
    CHECK(s.failed == 6);
    CHECK(s.malformed == 5);  // lines 2, 3, 4, 6, 7
    CHECK(s.exit_status() == 1);

    std::map<std::string, std::vector<json>> by_id;
    for (const json& r : read_records(dir.file("out.jsonl"))) by_id[r.at("custom_id").get<std::string>()].push_back(r);
    REQUIRE(by_id.size() == 7);
    REQUIRE(by_id["a"].size() == 2);
    const auto code = [](const json& r) { return r.at("error").is_null() ? std::string("ok") : r.at("error").at("code").get<std::string>(); };
    CHECK(std::multiset<std::string>{code(by_id["a"][0]), code(by_id["a"][1])} ==
          std::multiset<std::string>{"ok", "duplicate_custom_id"});
    CHECK(code(by_id["line-2"].at(0)) == "invalid_json");
    CHECK(code(by_id["line-3"].at(0)) == "missing_custom_id");
    CHECK(code(by_id["b"].at(0)) == "missing_body");
    CHECK(code(by_id["line-7"].at(0)) == "invalid_request");
    CHECK(code(by_id["c"].at(0)) == "ok");
    // A 400 from the server is final: one attempt, its code and the response kept.
    const json& e = by_id["e"].at(0);
    CHECK(code(e) == "missing_required_parameter");
    CHECK(e.at("response").at("status_code") == 400);
    CHECK(mock.totals().requests_total == 3);  // a, c, e: malformed lines are never sent
    CHECK(mock.totals().bad_requests_400 == 1);
}

TEST_CASE("a run stopped after K lines and resumed answers every line once and sends none twice", "[llm_batch][http]") {
    mock_upstream::server mock(generous_mock());
    const int port = mock.start();
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 60);

    llm_batch::options first = test_options(dir, port);
    first.max_lines = 25;
    const llm_batch::summary s1 = llm_batch::run(first);
    CHECK(s1.requests == 25);
    CHECK(s1.unfinished == 35);
    CHECK(s1.exit_status() == 1);
    REQUIRE(read_records(dir.file("out.jsonl")).size() == 25);
    CHECK(mock.totals().requests_total == 25);

    // A kill in the middle of a write leaves a torn last line: resume cuts it off.
    { std::ofstream(dir.file("out.jsonl"), std::ios::app) << R"({"id":"batch_req_torn","custom_id":"req-59","resp)"; }

    llm_batch::options second = test_options(dir, port);
    second.resume = true;
    llm_batch::runner resumed(second);
    CHECK(resumed.resumed().torn_tail);
    const llm_batch::summary s2 = resumed.run();
    CHECK(s2.skipped_resumed == 25);
    CHECK(s2.requests == 35);
    CHECK(s2.unfinished == 0);
    CHECK(s2.exit_status() == 0);

    const auto ids = ids_of(read_records(dir.file("out.jsonl")));
    REQUIRE(ids.size() == 60);
    for (const auto& [id, count] : ids) CHECK(count == 1);
    CHECK(mock.totals().requests_total == 60);

    // A third run has nothing left to send.
    const llm_batch::summary s3 = llm_batch::run(second);
    CHECK(s3.skipped_resumed == 60);
    CHECK(s3.requests == 0);
    CHECK(mock.totals().requests_total == 60);
}

TEST_CASE("a stop during the run writes every request in flight, and resume completes the rest", "[llm_batch][http]") {
    mock_upstream::config slow = generous_mock();
    slow.min_latency_ms = 20;
    slow.max_latency_ms = 40;
    mock_upstream::server mock(slow);
    const int port = mock.start();
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 60);

    std::atomic<bool> stop{false};
    llm_batch::options o = test_options(dir, port);
    o.concurrency = 4;
    o.stop = &stop;
    std::thread stopper([&] {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (mock.totals().requests_total < 10 && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(1ms);
        }
        stop = true;
    });
    const llm_batch::summary s1 = llm_batch::run(o);
    stopper.join();
    CHECK(s1.stopped);
    CHECK(s1.exit_status() == 130);
    CHECK(s1.unfinished > 0);
    // Every request the server saw has its record: nothing in flight was lost.
    const auto sent = mock.totals().requests_total;
    CHECK(static_cast<std::int64_t>(read_records(dir.file("out.jsonl")).size()) == sent);
    CHECK(s1.requests + s1.unfinished == 60);

    stop = false;
    o.resume = true;
    const llm_batch::summary s2 = llm_batch::run(o);
    CHECK(s2.skipped_resumed == sent);
    const auto ids = ids_of(read_records(dir.file("out.jsonl")));
    REQUIRE(ids.size() == 60);
    for (const auto& [id, count] : ids) CHECK(count == 1);
    CHECK(mock.totals().requests_total == 60);
}

TEST_CASE("an existing output is refused without --resume, and a stop before the start sends nothing", "[llm_batch][http]") {
    mock_upstream::server mock(generous_mock());
    const int port = mock.start();
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 10);
    write_file(dir.file("out.jsonl"), "{}\n");
    CHECK_THROWS_AS(llm_batch::runner(test_options(dir, port)), llm_batch::setup_error);
    CHECK(read_file(dir.file("out.jsonl")) == "{}\n");  // untouched

    fs::remove(dir.file("out.jsonl"));
    std::atomic<bool> stop{true};
    llm_batch::options o = test_options(dir, port);
    o.stop = &stop;
    const llm_batch::summary s = llm_batch::run(o);
    CHECK(s.requests == 0);
    CHECK(s.unfinished == 10);
    CHECK(s.exit_status() == 130);
    CHECK(mock.totals().requests_total == 0);
}

TEST_CASE("500s and dropped connections are retried until every line succeeds", "[llm_batch][http]") {
    mock_upstream::config flaky = generous_mock();
    flaky.error_rate = 0.2;
    flaky.drop_rate = 0.1;
    flaky.seed = 7;
    mock_upstream::server mock(flaky);
    const int port = mock.start();
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 40);

    llm_batch::options o = test_options(dir, port);
    o.max_attempts = 10;  // a line fails for good with probability 0.3^10 ≈ 6e-6
    const llm_batch::summary s = llm_batch::run(o);
    CHECK(s.succeeded == 40);
    CHECK(s.failed == 0);
    CHECK(s.server_errors > 0);
    CHECK(s.network_errors > 0);
    CHECK(s.server_errors == mock.totals().errors_500);
    CHECK(s.network_errors == mock.totals().dropped);
    CHECK(s.retries == s.server_errors + s.network_errors);
    CHECK(s.http_requests == mock.totals().requests_total);
    const auto ids = ids_of(read_records(dir.file("out.jsonl")));
    REQUIRE(ids.size() == 40);
    for (const auto& [id, count] : ids) CHECK(count == 1);
}

TEST_CASE("when every answer is a 500, each line fails after max_attempts with the last response", "[llm_batch][http]") {
    mock_upstream::config broken = generous_mock();
    broken.error_rate = 1.0;
    mock_upstream::server mock(broken);
    const int port = mock.start();
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 5);

    llm_batch::options o = test_options(dir, port);
    o.max_attempts = 3;
    const llm_batch::summary s = llm_batch::run(o);
    CHECK(s.failed == 5);
    CHECK(s.retries == 5 * 2);
    CHECK(s.exit_status() == 1);
    CHECK(mock.totals().requests_total == 5 * 3);
    for (const json& r : read_records(dir.file("out.jsonl"))) {
        CHECK(r.at("error").at("code") == "server_error");
        CHECK(r.at("error").at("message").get<std::string>().find("gave up after 3 attempts") != std::string::npos);
        CHECK(r.at("response").at("status_code") == 500);
    }
}

TEST_CASE("with the mock's limits given, a paced run gets no 429", "[llm_batch][http]") {
    mock_upstream::config limited = generous_mock();
    limited.requests_per_minute = 600;  // bucket of 10 requests, 10 per second
    limited.tokens_per_minute = 12'000;  // bucket of 200 tokens, 200 per second
    mock_upstream::server mock(limited);
    const int port = mock.start();
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 30);

    llm_batch::options o = test_options(dir, port);
    o.requests_per_minute = 600;
    o.tokens_per_minute = 12'000;
    const auto start = std::chrono::steady_clock::now();
    const llm_batch::summary s = llm_batch::run(o);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(s.succeeded == 30);
    CHECK(s.throttled_429 == 0);
    CHECK(mock.totals().throttled_429 == 0);
    CHECK(mock.totals().requests_total == 30);
    // Paced, not lucky: the gate's 9 requests of burst, then 9.8 per second: (30 − 9) / 9.8 ≈ 2.1 s.
    CHECK(elapsed > 1.5);
}

TEST_CASE("without the gate the same run meets 429s, and every line still gets its record", "[llm_batch][http]") {
    mock_upstream::config limited = generous_mock();
    limited.requests_per_minute = 600;  // bucket of 10 requests, 10 per second
    mock_upstream::server mock(limited);
    const int port = mock.start();
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 30);

    llm_batch::options o = test_options(dir, port);
    o.use_gate = false;
    o.max_attempts = 20;  // the workers retry together after each retry-after: some may still lose 20 times
    const llm_batch::summary s = llm_batch::run(o);
    CHECK(s.throttled_429 > 0);
    CHECK(s.throttled_429 == mock.totals().throttled_429);
    CHECK(s.http_requests == s.succeeded + s.throttled_429);  // every attempt got a 200 or a 429
    CHECK(s.requests == 30);
    CHECK(ids_of(read_records(dir.file("out.jsonl"))).size() == 30);
}

TEST_CASE("without --rpm/--tpm the limits are learned from the headers and every line succeeds", "[llm_batch][http]") {
    mock_upstream::config limited = generous_mock();
    limited.requests_per_minute = 600;
    limited.tokens_per_minute = 12'000;
    mock_upstream::server mock(limited);
    const int port = mock.start();
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 30);

    const llm_batch::summary s = llm_batch::run(test_options(dir, port));
    CHECK(s.succeeded == 30);
    CHECK(s.learned_requests_per_minute == 600);
    CHECK(s.learned_tokens_per_minute == 12'000);
    CHECK(s.throttled_429 <= 8);  // at most the first wave, sent before any header was seen
}

TEST_CASE("the API key goes in the Authorization header and nowhere else", "[llm_batch][http]") {
    capture_server server;
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 3);
    llm_batch::options o = test_options(dir, server.port);
    o.api_key = "sk-test-secret-123";
    o.summary_json_path = dir.file("summary.json");
    const llm_batch::summary s = llm_batch::run(o);
    CHECK(s.succeeded == 3);
    REQUIRE(server.authorization.size() == 3);
    for (const std::string& a : server.authorization) CHECK(a == "Bearer sk-test-secret-123");
    CHECK(read_file(dir.file("out.jsonl")).find("sk-test") == std::string::npos);
    CHECK(read_file(dir.file("summary.json")).find("sk-test") == std::string::npos);
}

// ---------------------------------------------------------------------------
// The program
// ---------------------------------------------------------------------------

TEST_CASE("the program runs a batch, writes its summary JSON and exits 0", "[llm_batch][program]") {
    capture_server server;
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 4);
    const std::string command = "LLM_BATCH_TEST_KEY=sk-program-key-9 " LLM_BATCH_BINARY " --input " + dir.file("in.jsonl") +
                                " --output " + dir.file("out.jsonl") + " --base-url http://127.0.0.1:" +
                                std::to_string(server.port) + " --api-key-env LLM_BATCH_TEST_KEY --summary-json " +
                                dir.file("summary.json") + " 2>" + dir.file("stderr.txt");
    CHECK(run_command(command) == 0);
    const json summary = json::parse(read_file(dir.file("summary.json")));
    for (const char* field : {"requests", "succeeded", "failed", "throttled_429", "elapsed_s", "requests_per_s", "tokens_per_s"}) {
        CHECK(summary.contains(field));
    }
    CHECK(summary.at("succeeded") == 4);
    CHECK(summary.at("throttled_429") == 0);
    CHECK(read_records(dir.file("out.jsonl")).size() == 4);
    for (const std::string& a : server.authorization) CHECK(a == "Bearer sk-program-key-9");
    const std::string err = read_file(dir.file("stderr.txt"));
    CHECK(err.find("4 succeeded") != std::string::npos);  // the final summary line
    CHECK(err.find("sk-program") == std::string::npos);
}

TEST_CASE("the program rejects bad usage with one line on stderr and status 2", "[llm_batch][program]") {
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 1);
    write_file(dir.file("full.jsonl"), "{}\n");
    const std::string err = dir.file("stderr.txt");
    const std::string common = " --input " + dir.file("in.jsonl") + " --base-url http://127.0.0.1:1";
    const auto one_line = [&] {
        const std::string text = read_file(err);
        return !text.empty() && text.find('\n') == text.size() - 1;
    };

    CHECK(run_command(LLM_BATCH_BINARY " --bogus 2>" + err) == 2);
    CHECK(one_line());
    CHECK(read_file(err).find("--bogus") != std::string::npos);

    CHECK(run_command(LLM_BATCH_BINARY " --input " + dir.file("missing.jsonl") + " --output " + dir.file("o.jsonl") +
                      " --base-url http://127.0.0.1:1 2>" + err) == 2);
    CHECK(one_line());

    CHECK(run_command(LLM_BATCH_BINARY + common + " --output " + dir.file("full.jsonl") + " 2>" + err) == 2);
    CHECK(one_line());
    CHECK(read_file(err).find("--resume") != std::string::npos);

    CHECK(run_command(LLM_BATCH_BINARY + common + " --output " + dir.file("o.jsonl") + " --concurrency 0 2>" + err) == 2);
    CHECK(one_line());

    CHECK(run_command("env -u LLM_BATCH_NO_SUCH_KEY " LLM_BATCH_BINARY + common + " --output " + dir.file("o.jsonl") +
                      " --api-key-env LLM_BATCH_NO_SUCH_KEY 2>" + err) == 2);
    CHECK(one_line());
    CHECK(read_file(err).find("LLM_BATCH_NO_SUCH_KEY") != std::string::npos);

    CHECK(run_command(LLM_BATCH_BINARY + common + " --output " + dir.file("o.jsonl") + " --base-url localhost:80 2>" + err) == 2);
    CHECK(one_line());

    CHECK(run_command(LLM_BATCH_BINARY " --help >" + dir.file("help.txt") + " 2>" + err) == 0);
    CHECK(read_file(dir.file("help.txt")).find("--max-attempts") != std::string::npos);
}

// ---------------------------------------------------------------------------
// Issue 14: reliability when pushed
// ---------------------------------------------------------------------------

namespace {

/// The records of an output file by their "line".
std::map<std::int64_t, std::vector<json>> records_by_line(const std::string& path) {
    std::map<std::int64_t, std::vector<json>> out;
    for (const json& r : read_records(path)) out[r.at("line").get<std::int64_t>()].push_back(r);
    return out;
}

std::string code_of(const json& record) {
    return record.at("error").is_null() ? std::string("ok") : record.at("error").at("code").get<std::string>();
}

/// Waits (bounded: 20 s) until `done()`; false when it never happened.
template <class Done>
bool eventually(Done done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

/// A server whose chat answers are set by the test: `status` (with an
/// OpenAI-shaped error body unless 200) and extra `headers`; remembers every
/// request's headers.
struct scripted_server {
    scripted_server() {
        server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
            int answer = 200;
            httplib::Headers extra;
            {
                std::lock_guard lock(mutex);
                requests.push_back(req.headers);
                answer = status;
                extra = headers;
            }
            if (const int ms = delay_ms.load(); ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
            for (const auto& [name, value] : extra) res.set_header(name, value);
            res.status = answer;
            if (answer == 200) {
                res.set_content(R"({"id":"chatcmpl-1","usage":{"prompt_tokens":3,"completion_tokens":2}})", "application/json");
            } else {
                res.set_content(R"({"error":{"message":"scripted","type":"invalid_request_error","code":"scripted_error"}})",
                                "application/json");
            }
        });
        port = server.bind_to_any_port("127.0.0.1");
        thread = std::thread([this] { server.listen_after_bind(); });
        while (!server.is_running()) std::this_thread::sleep_for(1ms);
    }
    ~scripted_server() {
        server.stop();
        thread.join();
    }
    void answer(int s, httplib::Headers h = {}) {
        std::lock_guard lock(mutex);
        status = s;
        headers = std::move(h);
    }
    std::size_t count() {
        std::lock_guard lock(mutex);
        return requests.size();
    }
    httplib::Server server;
    int port = 0;
    std::thread thread;
    std::mutex mutex;
    int status = 200;
    httplib::Headers headers;
    std::vector<httplib::Headers> requests;
    std::atomic<int> delay_ms{0};
};

/// A free TCP port on 127.0.0.1 with nothing listening (bound, then closed).
int closed_port() {
    httplib::Server probe;
    const int port = probe.bind_to_any_port("127.0.0.1");
    return port;  // the socket closes with `probe`
}

}  // namespace

TEST_CASE("a line whose max_tokens or n overflows the token count gets request_too_large and the run goes on",
          "[llm_batch][http][issue14]") {
    mock_upstream::server mock(generous_mock());
    const int port = mock.start();
    temp_dir dir;
    json huge = json::parse(chat_line("huge", "x"));
    huge["body"]["max_tokens"] = std::numeric_limits<std::int64_t>::max();
    json many = json::parse(chat_line("many", "x"));
    many["body"]["max_tokens"] = 1000;
    many["body"]["n"] = 10'000'000'000'000'000LL;
    write_file(dir.file("in.jsonl"), chat_line("a", "1") + huge.dump() + "\n" + chat_line("b", "2") + many.dump() + "\n" +
                                         chat_line("c", "3") + chat_line("d", "4") + chat_line("e", "5"));

    llm_batch::options o = test_options(dir, port);
    o.tokens_per_minute = 100'000;
    const llm_batch::summary s = llm_batch::run(o);
    CHECK(s.succeeded == 5);
    CHECK(s.failed == 2);
    const auto by_line = records_by_line(dir.file("out.jsonl"));
    REQUIRE(by_line.size() == 7);
    CHECK(code_of(by_line.at(2).at(0)) == "request_too_large");
    CHECK(code_of(by_line.at(4).at(0)) == "request_too_large");
    CHECK(mock.totals().requests_total == 5);

    // Resume has nothing to do: request_too_large is final.
    o.resume = true;
    const llm_batch::summary again = llm_batch::run(o);
    CHECK(again.skipped_resumed == 7);
    CHECK(again.requests == 0);
    CHECK(again.exit_status() == 1);
}

TEST_CASE("a kill while the first of two lines sharing a custom_id is in flight loses neither line on resume",
          "[llm_batch][http][program][issue14]") {
    mock_upstream::config slow = generous_mock();
    slow.min_latency_ms = 2000;
    slow.max_latency_ms = 2000;
    mock_upstream::server mock(slow);
    const int port = mock.start();
    temp_dir dir;
    write_file(dir.file("in.jsonl"), chat_line("A", "first") + chat_line("A", "second"));

    ratelimit_test::child c = ratelimit_test::spawn(LLM_BATCH_BINARY, {"--input", dir.file("in.jsonl"), "--output",
                                                                        dir.file("out.jsonl"), "--base-url",
                                                                        "http://127.0.0.1:" + std::to_string(port),
                                                                        "--concurrency", "2", "--no-progress"});
    // Line 2's duplicate record is written at once; line 1 waits out its 2 s.
    const bool duplicate_written = eventually([&] {
        return read_file(dir.file("out.jsonl")).find("duplicate_custom_id") != std::string::npos &&
               mock.totals().requests_total == 1;
    });
    ::kill(c.pid, SIGKILL);
    (void)ratelimit_test::exit_status(c.pid);
    ::close(c.out);
    ::close(c.err);
    REQUIRE(duplicate_written);
    REQUIRE(read_records(dir.file("out.jsonl")).size() == 1);

    llm_batch::options o = test_options(dir, port);
    o.resume = true;
    const llm_batch::summary s = llm_batch::run(o);
    CHECK(s.skipped_resumed == 1);
    CHECK(s.succeeded == 1);
    const auto by_line = records_by_line(dir.file("out.jsonl"));
    REQUIRE(by_line.size() == 2);
    REQUIRE(by_line.at(1).size() == 1);
    CHECK(code_of(by_line.at(1).at(0)) == "ok");
    REQUIRE(by_line.at(2).size() == 1);
    CHECK(code_of(by_line.at(2).at(0)) == "duplicate_custom_id");
}

TEST_CASE("resume sends again the lines whose record is a network error, leaving one record per line",
          "[llm_batch][http][issue14]") {
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 6);
    llm_batch::options o = test_options(dir, closed_port());  // the server is down
    o.max_attempts = 1;
    const llm_batch::summary down = llm_batch::run(o);
    CHECK(down.failed == 6);
    for (const json& r : read_records(dir.file("out.jsonl"))) CHECK(code_of(r) == "network_error");

    mock_upstream::server mock(generous_mock());
    llm_batch::options up = test_options(dir, mock.start());
    up.resume = true;
    const llm_batch::summary s = llm_batch::run(up);
    CHECK(s.retried_failed == 6);
    CHECK(s.succeeded == 6);
    CHECK(s.previously_failed == 0);
    CHECK(s.exit_status() == 0);
    const auto by_line = records_by_line(dir.file("out.jsonl"));
    REQUIRE(by_line.size() == 6);
    for (const auto& [line, records] : by_line) {
        REQUIRE(records.size() == 1);
        CHECK(code_of(records.at(0)) == "ok");
    }
    CHECK(mock.totals().requests_total == 6);
}

TEST_CASE("a final error stays on --resume and is sent again with --retry-failed", "[llm_batch][http][issue14]") {
    scripted_server server;
    server.answer(400);
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 3);
    llm_batch::options o = test_options(dir, server.port);
    CHECK(llm_batch::run(o).failed == 3);
    CHECK(server.count() == 3);

    server.answer(200);
    o.resume = true;
    const llm_batch::summary kept = llm_batch::run(o);
    CHECK(kept.requests == 0);
    CHECK(kept.previously_failed == 3);
    CHECK(server.count() == 3);

    o.resume = false;
    o.retry_failed = true;  // implies --resume
    const llm_batch::summary again = llm_batch::run(o);
    CHECK(again.retried_failed == 3);
    CHECK(again.succeeded == 3);
    CHECK(again.exit_status() == 0);
    CHECK(server.count() == 6);
    const auto by_line = records_by_line(dir.file("out.jsonl"));
    REQUIRE(by_line.size() == 3);
    for (const auto& [line, records] : by_line) {
        REQUIRE(records.size() == 1);
        CHECK(code_of(records.at(0)) == "ok");
    }
}

TEST_CASE("an output naming a directory is refused as a directory", "[llm_batch][issue14]") {
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 1);
    fs::create_directories(dir.file("outdir"));
    llm_batch::options o = test_options(dir, 1);
    o.output_path = dir.file("outdir");
    try {
        llm_batch::runner r(o);
        FAIL("a directory was accepted as the output");
    } catch (const llm_batch::setup_error& e) {
        const std::string what = e.what();
        CHECK(what.find("is a directory") != std::string::npos);
        CHECK(what.find("not empty") == std::string::npos);
    }
    o.resume = true;
    std::string with_resume;
    try {
        llm_batch::runner r(o);
    } catch (const llm_batch::setup_error& e) {
        with_resume = e.what();
    }
    CHECK(with_resume.find("is a directory") != std::string::npos);
}

TEST_CASE("SIGTERM during a long 429 pause ends the program at once, with every line left for --resume",
          "[llm_batch][http][program][issue14]") {
    scripted_server server;
    server.answer(429, {{"retry-after", "60"}});
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 3);
    // --rpm 60: a bucket of one request, so the second worker waits in the gate's line when the pause begins.
    ratelimit_test::child c = ratelimit_test::spawn(
        LLM_BATCH_BINARY, {"--input", dir.file("in.jsonl"), "--output", dir.file("out.jsonl"), "--base-url",
                           "http://127.0.0.1:" + std::to_string(server.port), "--rpm", "60", "--concurrency", "2",
                           "--no-progress"});
    REQUIRE(eventually([&] { return server.count() >= 1; }));
    ::kill(c.pid, SIGTERM);
    // Bounded: the pause is 60 s; the program must end long before (or it is killed and the test fails).
    int status = 0;
    bool exited = false;
    const auto give_up = std::chrono::steady_clock::now() + 15s;
    while (!exited && std::chrono::steady_clock::now() < give_up) {
        exited = ::waitpid(c.pid, &status, WNOHANG) == c.pid;
        if (!exited) std::this_thread::sleep_for(10ms);
    }
    if (!exited) {
        ::kill(c.pid, SIGKILL);
        (void)::waitpid(c.pid, &status, 0);
    }
    ::close(c.out);
    ::close(c.err);
    REQUIRE(exited);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 130);
    CHECK(read_records(dir.file("out.jsonl")).empty());
    CHECK(server.count() == 1);  // nothing sent after the stop
}

namespace {

/// The mock_upstream program on a free port; stopped with SIGTERM at scope exit.
struct mock_program {
    explicit mock_program(std::vector<std::string> args) {
        args.insert(args.begin(), {"--port", "0"});
        process = ratelimit_test::spawn(MOCK_UPSTREAM_BINARY, args);
        const std::string line = ratelimit_test::read_line(process.out);  // "listening on 127.0.0.1:PORT"
        const auto colon = line.rfind(':');
        if (line.rfind("listening on ", 0) == 0 && colon != std::string::npos) port = std::atoi(line.c_str() + colon + 1);
    }
    ~mock_program() {
        ::kill(process.pid, SIGTERM);
        (void)ratelimit_test::exit_status(process.pid);
        ::close(process.out);
        ::close(process.err);
    }
    mock_program(const mock_program&) = delete;
    mock_program& operator=(const mock_program&) = delete;
    [[nodiscard]] json stats() const {
        httplib::Client client("127.0.0.1", port);
        const auto res = client.Get("/stats?seconds=1");
        return res && res->status == 200 ? json::parse(res->body) : json();
    }
    ratelimit_test::child process;
    int port = 0;
};

/// Runs llm_batch on `args` to its end (bounded: killed after 120 s); its exit status, -1 if killed.
int run_program(const std::vector<std::string>& args) {
    ratelimit_test::child c = ratelimit_test::spawn(LLM_BATCH_BINARY, args);
    int status = 0;
    bool exited = false;
    const auto give_up = std::chrono::steady_clock::now() + 120s;
    while (!exited && std::chrono::steady_clock::now() < give_up) {
        exited = ::waitpid(c.pid, &status, WNOHANG) == c.pid;
        if (!exited) std::this_thread::sleep_for(10ms);
    }
    if (!exited) {
        ::kill(c.pid, SIGKILL);
        (void)::waitpid(c.pid, &status, 0);
    }
    ::close(c.out);
    ::close(c.err);
    return exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::size_t line_count(const std::string& path) {
    const std::string text = read_file(path);
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

}  // namespace

TEST_CASE("a run killed mid-way and resumed at once with the right limits draws no 429 from mock_upstream",
          "[llm_batch][program][issue14]") {
    // 6000 RPM: buckets of 100 (provider) and 98 (gate, 98% headroom) refilled at 100/s. A resume
    // that starts with a full bucket sends 98 at once into a provider bucket the killed run drained.
    mock_program mock({"--rpm", "6000", "--tpm", "1000000000", "--latency-ms", "0:5"});
    REQUIRE(mock.port > 0);
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 600);
    const std::vector<std::string> args{"--input", dir.file("in.jsonl"), "--output", dir.file("out.jsonl"),
                                        "--base-url", "http://127.0.0.1:" + std::to_string(mock.port),
                                        "--rpm", "6000", "--concurrency", "16", "--no-progress"};
    ratelimit_test::child first = ratelimit_test::spawn(LLM_BATCH_BINARY, args);
    // Well past the first burst, into the paced part: the provider's bucket is nearly empty now.
    const bool paced = eventually([&] { return line_count(dir.file("out.jsonl")) >= 250; });
    ::kill(first.pid, SIGKILL);
    (void)ratelimit_test::exit_status(first.pid);
    ::close(first.out);
    ::close(first.err);
    REQUIRE(paced);

    std::vector<std::string> resume = args;
    resume.push_back("--resume");
    CHECK(run_program(resume) == 0);  // at once: nothing between the kill and the restart
    CHECK(mock.stats().at("throttled_429") == 0);  // a full burst on restart draws several
    const auto ids = ids_of(read_records(dir.file("out.jsonl")));
    CHECK(ids.size() == 600);
}

TEST_CASE("each request carries an Idempotency-Key stable across runs and its custom_id as X-Request-ID",
          "[llm_batch][http][issue14]") {
    scripted_server server;
    temp_dir dir;
    write_file(dir.file("in.jsonl"), chat_line("a", "1") + chat_line("b\r\nX-Evil: 1", "2") + chat_line("a", "3"));
    llm_batch::options o = test_options(dir, server.port);
    o.concurrency = 1;
    CHECK(llm_batch::run(o).succeeded == 2);  // line 3 repeats "a": a duplicate, never sent
    REQUIRE(server.requests.size() == 2);
    const auto header = [&](std::size_t i, const char* name) {
        const auto it = server.requests.at(i).find(name);
        return it == server.requests.at(i).end() ? std::string() : it->second;
    };
    CHECK(header(0, "X-Request-ID") == "a");
    // Sent as "b%0D%0AX-Evil: 1" (httplib's server decodes it again): one header, never two.
    CHECK(llm_batch::header_value("b\r\nX-Evil: 1") == "b%0D%0AX-Evil: 1");
    CHECK(llm_batch::header_value("100%\xff") == "100%25%FF");
    CHECK((header(1, "X-Request-ID") == "b%0D%0AX-Evil: 1" || header(1, "X-Request-ID") == "b\r\nX-Evil: 1"));
    CHECK(server.requests.at(1).count("X-Evil") == 0);
    const std::string key1 = header(0, "Idempotency-Key"), key2 = header(1, "Idempotency-Key");
    CHECK(key1.rfind("llm-batch-", 0) == 0);
    CHECK(key1.find("-1-") != std::string::npos);
    CHECK(key2.find("-2-") != std::string::npos);
    CHECK(key1 != key2);

    // The same input again (a new output): the same keys.
    fs::remove(dir.file("out.jsonl"));
    CHECK(llm_batch::run(o).succeeded == 2);
    REQUIRE(server.requests.size() == 4);
    CHECK(header(2, "Idempotency-Key") == key1);
    CHECK(header(3, "Idempotency-Key") == key2);
}

TEST_CASE("resume sends again only the requests in flight at a kill, with the same keys, and counts them as resent",
          "[llm_batch][http][program][issue14]") {
    scripted_server server;
    server.delay_ms = 1500;
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 8);
    ratelimit_test::child c = ratelimit_test::spawn(
        LLM_BATCH_BINARY, {"--input", dir.file("in.jsonl"), "--output", dir.file("out.jsonl"), "--base-url",
                           "http://127.0.0.1:" + std::to_string(server.port), "--concurrency", "3", "--no-progress",
                           "--rpm", "6000", "--tpm", "10000000"});  // limits known: no one-at-a-time probe
    const bool three_in_flight = eventually([&] { return server.count() == 3; });
    ::kill(c.pid, SIGKILL);
    (void)ratelimit_test::exit_status(c.pid);
    ::close(c.out);
    ::close(c.err);
    REQUIRE(three_in_flight);
    REQUIRE(line_count(dir.file("out.jsonl")) == 0);
    std::set<std::string> first_keys;
    {
        std::lock_guard lock(server.mutex);
        for (const auto& h : server.requests) first_keys.insert(h.find("Idempotency-Key")->second);
    }

    server.delay_ms = 0;
    llm_batch::options o = test_options(dir, server.port);
    o.resume = true;
    o.summary_json_path = dir.file("summary.json");
    const llm_batch::summary s = llm_batch::run(o);
    CHECK(s.succeeded == 8);
    CHECK(s.resent == 3);
    CHECK(json::parse(read_file(dir.file("summary.json"))).at("resent") == 3);
    REQUIRE(server.count() == 3 + 8);
    std::set<std::string> resent_keys;
    {
        std::lock_guard lock(server.mutex);
        for (std::size_t i = 3; i < server.requests.size(); ++i) {
            const std::string key = server.requests[i].find("Idempotency-Key")->second;
            if (first_keys.count(key) != 0) resent_keys.insert(key);
        }
    }
    CHECK(resent_keys == first_keys);  // the re-sent requests carry the keys they were first sent with

    // A second resume sends nothing and re-sends nothing.
    const llm_batch::summary again = llm_batch::run(o);
    CHECK(again.requests == 0);
    CHECK(again.resent == 0);
    CHECK(server.count() == 3 + 8);
}

TEST_CASE("learning the limits at 60 RPM from mock_upstream's headers draws no 429: one request goes first",
          "[llm_batch][program][issue14]") {
    // 60 RPM: the provider's bucket holds 1 request. Sent before any header was seen, a first wave
    // of --concurrency requests drew concurrency − 1 429s (9 per 25 lines at --concurrency 10).
    mock_program mock({"--rpm", "60", "--latency-ms", "10:30"});
    REQUIRE(mock.port > 0);
    temp_dir dir;
    write_batch(dir.file("in.jsonl"), 6);
    CHECK(run_program({"--input", dir.file("in.jsonl"), "--output", dir.file("out.jsonl"), "--base-url",
                       "http://127.0.0.1:" + std::to_string(mock.port), "--concurrency", "16", "--no-progress",
                       "--summary-json", dir.file("summary.json")}) == 0);
    const json summary = json::parse(read_file(dir.file("summary.json")));
    CHECK(summary.at("succeeded") == 6);
    CHECK(summary.at("limits").at("requests_per_minute") == 60);
    CHECK(summary.at("throttled_429") == 0);
    CHECK(mock.stats().at("throttled_429") == 0);
}
