// Unit tests for user-key normalisation (affinity/user_key.h).
#include <doctest/doctest.h>

#include "affinity/user_key.h"

using sprayer::affinity::normalise_user;
using sprayer::affinity::NormaliseConfig;
using sprayer::affinity::UserNormaliser;

TEST_CASE("normalise: defaults trim, lower-case, strip domains, take the Notes CN") {
  const NormaliseConfig config;
  CHECK(normalise_user("jdoe", config) == "jdoe");
  CHECK(normalise_user("  JDoe \t", config) == "jdoe");
  CHECK(normalise_user("ACME\\JDoe", config) == "jdoe");
  CHECK(normalise_user("JDoe@Acme.COM", config) == "jdoe");
  CHECK(normalise_user("ACME\\jdoe@acme.com", config) == "jdoe");
  CHECK(normalise_user("a\\b\\jdoe", config) == "jdoe");        // last backslash
  CHECK(normalise_user("\"odd@local\"@acme.com", config) == "\"odd@local\"");  // last '@'
  CHECK(normalise_user("CN=Jane Doe/OU=Sales/O=Acme", config) == "jane doe");
  CHECK(normalise_user("cn=Jane Doe/O=Acme", config) == "jane doe");
  CHECK(normalise_user("CN=Jane Doe", config) == "jane doe");
  CHECK(normalise_user("CN= Jane Doe /O=Acme", config) == "jane doe");
  CHECK(normalise_user("CN=Jane Doe/O=Acme@AcmeDomain", config) == "jane doe");
  CHECK(normalise_user("Jane Doe/Sales/Acme", config) == "jane doe/sales/acme");  // abbreviated: kept
  CHECK(normalise_user("ACME\\ jdoe ", config) == "jdoe");
}

TEST_CASE("normalise: only ASCII is lowered; UTF-8 multibyte sequences are kept") {
  const NormaliseConfig config;
  CHECK(normalise_user("J\xC3\x9CRGEN", config) == "j\xC3\x9Crgen");  // "JÜRGEN" -> "jÜrgen"
  CHECK(normalise_user("\xC3\xA9MILE", config) == "\xC3\xA9mile");
}

TEST_CASE("normalise: empty and degenerate inputs") {
  const NormaliseConfig config;
  CHECK(normalise_user("", config).empty());
  CHECK(normalise_user("   ", config).empty());
  CHECK(normalise_user("@acme.com", config).empty());
  CHECK(normalise_user("ACME\\", config).empty());
  CHECK(normalise_user("CN=/O=Acme", config).empty());
  CHECK(normalise_user("CN=", config).empty());
  CHECK(normalise_user("cn", config) == "cn");
}

TEST_CASE("normalise: each rule can be switched off") {
  NormaliseConfig config;
  config.lower_case = false;
  CHECK(normalise_user(" ACME\\JDoe ", config) == "JDoe");
  CHECK(normalise_user("CN=Jane Doe/O=Acme", config) == "Jane Doe");

  config = NormaliseConfig{};
  config.strip_domain = false;
  CHECK(normalise_user("ACME\\JDoe", config) == "acme\\jdoe");
  CHECK(normalise_user("JDoe@acme.com", config) == "jdoe@acme.com");

  config = NormaliseConfig{};
  config.notes_canonical = false;
  CHECK(normalise_user("CN=Jane Doe/O=Acme", config) == "cn=jane doe/o=acme");

  config = NormaliseConfig{false, false, false, {}};
  CHECK(normalise_user("  CN=Jane Doe/O=Acme@X ", config) == "CN=Jane Doe/O=Acme@X");
}

TEST_CASE("normalise: the alias map applies last, to the normalised form, first match wins") {
  NormaliseConfig config;
  config.map = {{"jane doe", "jdoe"}, {"jsmith", "john"}, {"jane doe", "other"}};
  CHECK(normalise_user("CN=Jane Doe/O=Acme", config) == "jdoe");
  CHECK(normalise_user("ACME\\JSmith", config) == "john");
  CHECK(normalise_user("JSmith2", config) == "jsmith2");
  CHECK(normalise_user("Jane Doe", config) == "jdoe");

  const UserNormaliser normaliser(config);
  for (const char* raw : {"CN=Jane Doe/O=Acme", "ACME\\JSmith", "JSmith2", "Jane Doe", "", "x"}) {
    CAPTURE(raw);
    CHECK(normaliser(raw) == normalise_user(raw, config));
  }
}

TEST_CASE("normalise: UserNormaliser without a map equals normalise_user") {
  const NormaliseConfig config;
  const UserNormaliser normaliser(config);
  for (const char* raw : {"jdoe", " ACME\\JDoe ", "CN=Jane Doe/O=Acme", "a@b@c", ""}) {
    CAPTURE(raw);
    CHECK(normaliser(raw) == normalise_user(raw, config));
  }
}
