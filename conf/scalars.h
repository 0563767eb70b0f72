// Inside conf/ only: one value on its own, without YAML: durations, sizes, addresses, names,
// tokens, and the words a message is made of ("did you mean"). The loader is in config.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace sprayer::conf::detail {

bool is_digit(char c);
bool all_digits(std::string_view text);
// Leading decimal digits of text, consumed; false on overflow of uint64.
bool take_number(std::string_view& text, uint64_t& out);
std::string quoted(std::string_view text);

// inet_pton on the whole of host (a NUL inside is refused, not cut at).
bool is_ipv4_literal(std::string_view host);
bool is_ipv6_literal(std::string_view host);

// Empty when text is valid (out set), else what is wrong with it, for a message.
std::string duration_problem(std::string_view text, Duration& out);
std::string size_problem(std::string_view text, uint64_t& out);
std::string endpoint_problem(std::string_view text, Endpoint& out);
std::string format_duration(Duration value);
std::string format_size(uint64_t bytes);

// The candidate closest to word if it is within two edits (first one wins a tie), else empty.
std::string_view closest(std::string_view word, const std::vector<std::string_view>& candidates);
std::string list_words(const std::vector<std::string_view>& words);

bool is_name(std::string_view text);
// RFC 9110 token: what may stand as the pseudonym in a Via header.
bool is_http_token(std::string_view text);
bool iequals_ascii(std::string_view a, std::string_view b);
bool is_visible_ascii(std::string_view text);
// The bytes of a numeric endpoint, so that "[::1]:80" and "[0:0::1]:80" compare equal.
std::string address_key(const Endpoint& endpoint);

}  // namespace sprayer::conf::detail
