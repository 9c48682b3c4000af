// Private: the INI reader behind Policy::parse (policy/parser.cpp).
#pragma once

#include "policy/policy.h"

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gs::policy {

// One parse of one text into one Policy. Friend of Policy, so it fills the
// policy's members directly; used once and thrown away.
class Parser {
public:
    Parser(Policy& p, std::string_view text, std::string_view file);
    ~Parser();
    Parser(const Parser&) = delete;
    Parser& operator=(const Parser&) = delete;
    void run();

private:
    struct KeyState;
    struct Section;
    // One auth_key file, read once per parse however many rules name it.
    struct Key {
        std::shared_ptr<const mces::auth::Psk> psk;   // null: error says why
        std::string error;
    };
    enum class LineKind { blank, key, continuation };

    static char* reader(char* buf, int size, void* self);
    static int handler(void* self, const char* section, const char* name, const char* value);
    char* read_line(char* buf, int size);
    void classify(std::string_view raw);
    void begin_section(std::string_view header, int line);
    void finish_section();
    void on_pair(std::string_view name, std::string_view value);
    void set_list(const std::string& key, std::string_view value, int line);
    void set_scalar(int key_id, const std::string& key, std::string_view value, int line);
    void diag(int line, std::string text);
    void key_diag(int line, std::string_view key, std::string_view value, std::string_view why);
    void section_diag(int line, std::string_view header, std::string_view why);
    std::string key_path(std::string_view written) const;
    const Key& key(std::string_view written);

    Policy& policy_;
    std::string_view text_;
    std::string file_;
    size_t pos_ = 0;
    int line_ = 0;
    LineKind kind_ = LineKind::blank;
    bool have_key_ = false;        // inih's "prev_name": a key line was seen in this section
    bool too_many_ = false;
    std::string cur_key_;          // the key continuation lines extend, "" = none
    int general_line_ = 0;
    std::map<std::string, int, std::less<>> flow_names_, overlay_names_;
    std::vector<int> syntax_lines_;
    std::unique_ptr<Section> sec_;
    std::map<std::string, Key, std::less<>> keys_;   // auth_key files read, by resolved path
};

}  // namespace gs::policy
