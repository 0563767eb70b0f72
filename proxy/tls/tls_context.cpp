// Loading is all-or-nothing and reports the first problem as text naming the file; nothing in
// here throws across OpenSSL or aborts on bad input.
#include "proxy/tls/tls_context.h"

#include "proxy/tls/tls_engine.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <ctime>

namespace sprayer::proxy {

namespace {

// The session id context of a certificate set: "sprayer" and a digest of the set's names.
// Sessions from either member of an active/standby pair (and from before a reload) must be
// accepted by the other, so it depends on nothing else; and a session made under one name set
// must not be resumed under another (RFC 6066 3): OpenSSL refuses a session whose context
// differs, for session IDs and tickets, TLS 1.2 and 1.3 alike.
std::string session_id_context(const std::vector<std::string>& names) {
  std::string joined;
  for (const std::string& n : names) joined.append(n).push_back('\n');
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  std::string out = "sprayer";
  if (EVP_Digest(joined.data(), joined.size(), digest, &len, EVP_sha256(), nullptr) == 1)
    out.append(reinterpret_cast<const char*>(digest), std::min<size_t>(len, SSL_MAX_SID_CTX_LENGTH - out.size()));
  return out;
}

// The host name of a ClientHello's server_name extension (RFC 6066 3), or "".
std::string client_hello_sni(SSL* ssl) {
  const unsigned char* p = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) != 1 || len < 2) return {};
  size_t list = (size_t(p[0]) << 8) | p[1];
  if (list + 2 > len) return {};
  p += 2;
  for (size_t i = 0; i + 3 <= list;) {
    unsigned type = p[i];
    size_t n = (size_t(p[i + 1]) << 8) | p[i + 2];
    if (i + 3 + n > list) return {};
    if (type == TLSEXT_NAMETYPE_host_name) return std::string(reinterpret_cast<const char*>(p + i + 3), n);
    i += 3 + n;
  }
  return {};
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct ChainFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using ChainPtr = std::unique_ptr<STACK_OF(X509), ChainFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string asn1_time_text(const ASN1_TIME* t) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || ASN1_TIME_print(bio.get(), t) != 1) return "?";
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, len > 0 ? size_t(len) : 0);
}

int refuse_password(char*, int, int, void*) { return 0; }  // never prompt on a terminal

bool read_certificates(const std::string& path, X509Ptr& leaf, ChainPtr& chain, std::string& error) {
  std::string pem;
  if (!read_small_file(path, pem, error)) return false;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) {
    error = path + ": out of memory";
    return false;
  }
  ERR_clear_error();
  leaf.reset(PEM_read_bio_X509(bio.get(), nullptr, refuse_password, nullptr));
  if (!leaf) {
    error = path + ": no PEM certificate found (" + openssl_reason() + ")";
    return false;
  }
  chain.reset(sk_X509_new_null());
  if (!chain) {
    error = path + ": out of memory";
    return false;
  }
  for (int n = 2;; ++n) {
    X509Ptr next(PEM_read_bio_X509(bio.get(), nullptr, refuse_password, nullptr));
    if (!next) {
      unsigned long e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();  // the normal end of the file
        return true;
      }
      error = path + ": certificate #" + std::to_string(n) + " is unreadable (" + openssl_reason() + ")";
      return false;
    }
    if (!sk_X509_push(chain.get(), next.get())) {
      error = path + ": out of memory";
      return false;
    }
    next.release();
  }
}

bool read_private_key(const std::string& path, PkeyPtr& key, std::string& error) {
  std::string pem;
  if (!read_small_file(path, pem, error)) return false;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ERR_clear_error();
  if (bio) key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_password, nullptr));
  bool encrypted = pem.find("ENCRYPTED") != std::string::npos;
  OPENSSL_cleanse(pem.data(), pem.size());
  if (!key) {
    error = path + ": no usable PEM private key (" + openssl_reason() + ")";
    if (encrypted) error += "; encrypted keys are not supported";
    return false;
  }
  return true;
}

// Validity of the leaf only: an expired intermediate may be deliberate (a cross-sign kept for
// old clients), and the client, not us, decides which path it builds.
bool check_validity(const std::string& path, X509* leaf, std::chrono::system_clock::time_point now,
                    std::string& error) {
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  const ASN1_TIME* not_before = X509_get0_notBefore(leaf);
  const ASN1_TIME* not_after = X509_get0_notAfter(leaf);
  int before = X509_cmp_time(not_before, &t);  // -1: not_before <= now
  int after = X509_cmp_time(not_after, &t);    // -1: not_after <= now
  if (before == 0 || after == 0) {
    error = path + ": certificate has an unreadable validity period";
    return false;
  }
  if (after < 0) {
    error = path + ": certificate expired (notAfter " + asn1_time_text(not_after) + ")";
    return false;
  }
  if (before > 0) {
    error = path + ": certificate is not yet valid (notBefore " + asn1_time_text(not_before) + ")";
    return false;
  }
  return true;
}

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return out;
}

// SAN dNSNames; the subject CN only when there are none (old certificates), as clients did.
std::vector<std::string> certificate_names(X509* cert) {
  std::vector<std::string> names;
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
      if (gn->type != GEN_DNS) continue;
      const unsigned char* data = ASN1_STRING_get0_data(gn->d.dNSName);
      int len = ASN1_STRING_length(gn->d.dNSName);
      std::string_view name(reinterpret_cast<const char*>(data), len > 0 ? size_t(len) : 0);
      if (!name.empty() && name.find('\0') == std::string_view::npos) names.push_back(lowered(name));
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {
    X509_NAME* subject = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (idx >= 0) {
      unsigned char* utf8 = nullptr;
      int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
      if (len > 0) {
        std::string_view cn(reinterpret_cast<const char*>(utf8), size_t(len));
        if (cn.find_first_of(" \0", 0, 2) == std::string_view::npos) names.push_back(lowered(cn));
      }
      OPENSSL_free(utf8);
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::string key_type_name(EVP_PKEY* key) {
  const char* name = EVP_PKEY_get0_type_name(key);
  return name ? name : "unknown";
}

bool set_mac_key(EVP_MAC_CTX* mac_ctx, const std::array<unsigned char, 32>& key) {
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key.data()), key.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  return EVP_MAC_CTX_set_params(mac_ctx, params) == 1;
}

}  // namespace

// The oldest queued OpenSSL error as short text ("no start line"); clears the queue.
std::string openssl_reason() {
  unsigned long e = ERR_peek_error();
  std::string out;
  if (e == 0) {
    out = "unknown OpenSSL error";
  } else if (const char* reason = ERR_reason_error_string(e)) {
    out = reason;
  } else {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out = buf;
  }
  ERR_clear_error();
  return out;
}

TlsContext::~TlsContext() {
  for (CertificateSet& set : sets_) SSL_CTX_free(set.ctx);
  EVP_CIPHER_free(ticket_cipher_);
}

TlsLoadResult TlsContext::load(const TlsSettings& settings, std::chrono::system_clock::time_point now,
                               const TlsContext* previous) {
  TlsLoadResult result;
  ERR_clear_error();
  std::unique_ptr<TlsContext> ctx(new TlsContext(settings));
  std::string& error = result.error;

  if (settings.min_version != "1.2" && settings.min_version != "1.3") {
    error = "min_version: must be \"1.2\" or \"1.3\", not \"" + settings.min_version + "\"";
    return result;
  }
  if (settings.session_timeout.count() <= 0) {
    error = "session_timeout: must be positive";
    return result;
  }
  for (const std::string& proto : settings.alpn) {
    if (proto.empty() || proto.size() > 255) {
      error = "alpn: protocol names must be 1 to 255 bytes long";
      return result;
    }
    ctx->alpn_wire_.push_back(static_cast<char>(proto.size()));
    ctx->alpn_wire_.append(proto);
  }
  if (settings.certificates.empty()) {
    error = "certificates: at least one certificate is required";
    return result;
  }
  if (!ctx->bio_method_.ok()) {
    error = "cannot create the TLS BIO method (out of memory)";
    return result;
  }
  ctx->ticket_cipher_ = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
  if (!ctx->ticket_cipher_) {
    error = "ticket keys: AES-256-CBC is not available (" + openssl_reason() + ")";
    return result;
  }

  if (!settings.ticket_key_file.empty() || !previous) {
    if (!ctx->reload_ticket_keys(error)) return result;
  } else {
    ctx->ticket_keys_.store(previous->ticket_keys_.load());
  }

  for (const TlsCertificateFiles& files : settings.certificates)
    if (!ctx->add_certificate(files, now, error)) return result;

  for (size_t i = 0; i < ctx->sets_.size(); ++i)
    for (const std::string& name : ctx->sets_[i].names) ctx->names_.add(name, i);

  ERR_clear_error();  // leave nothing behind that a later SSL_get_error could mistake as its own
  result.context = std::shared_ptr<const TlsContext>(ctx.release());
  return result;
}

bool TlsContext::configure(SSL_CTX* ctx, std::string& error) const {
  int min_version = settings_.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
  if (!SSL_CTX_set_min_proto_version(ctx, min_version) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
    error = "min_version: " + openssl_reason();
    return false;
  }
  // Renegotiation only serves attacks here (client-initiated CPU burn); compression is CRIME.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  // Every offered suite is strong; the order decides what a handshake costs. Clients list
  // AES-256-GCM-SHA384 first (OpenSSL's default), whose SHA-384 transcript and key schedule
  // cost a full handshake about 6 % more than AES-128-GCM-SHA256 and its records 40 % more
  // AES rounds. So our order wins, except that a client preferring ChaCha20 (a phone without
  // AES instructions) still gets it.
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
  // Tens of thousands of devices sit idle in ActiveSync Ping for up to 30 minutes: an idle
  // connection must not keep its 2 x ~17 KB record buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

  if (!settings_.ciphers.empty() && !SSL_CTX_set_cipher_list(ctx, settings_.ciphers.c_str())) {
    error = "ciphers: no usable cipher in \"" + settings_.ciphers + "\" (" + openssl_reason() + ")";
    return false;
  }
  if (!SSL_CTX_set_ciphersuites(ctx, settings_.ciphersuites.c_str())) {
    error = "ciphersuites: \"" + settings_.ciphersuites + "\" is invalid (" + openssl_reason() + ")";
    return false;
  }
  if (!SSL_CTX_set1_groups_list(ctx, settings_.groups.c_str())) {
    error = "groups: \"" + settings_.groups + "\" is invalid (" + openssl_reason() + ")";
    return false;
  }
  if (settings_.session_cache_size == 0) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, static_cast<long>(settings_.session_cache_size));
  }
  SSL_CTX_set_timeout(ctx, static_cast<long>(settings_.session_timeout.count()));
  if (!settings_.session_tickets) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);  // TLS 1.3 would still send tickets without this
  }

  // Every set's SSL_CTX carries the callbacks: after SSL_set_SSL_CTX OpenSSL takes ALPN from
  // the new one, while tickets and the session cache stay on the one the SSL was made from.
  SSL_CTX_set_app_data(ctx, const_cast<TlsContext*>(this));
  SSL_CTX_set_client_hello_cb(ctx, &TlsContext::on_client_hello, const_cast<TlsContext*>(this));
  SSL_CTX_set_tlsext_servername_callback(ctx, &TlsContext::on_servername);
  SSL_CTX_set_tlsext_servername_arg(ctx, const_cast<TlsContext*>(this));
  if (!alpn_wire_.empty()) SSL_CTX_set_alpn_select_cb(ctx, &TlsContext::on_alpn, const_cast<TlsContext*>(this));
  // The engine takes its TLS 1.3 traffic secrets from here to run its own record layer.
  if (settings_.own_records) SSL_CTX_set_keylog_callback(ctx, &TlsEngine::on_keylog);
  if (!SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &TlsContext::on_ticket_key)) {
    error = "ticket key callback: " + openssl_reason();
    return false;
  }
  return true;
}

bool TlsContext::add_certificate(const TlsCertificateFiles& files, std::chrono::system_clock::time_point now,
                                 std::string& error) {
  X509Ptr leaf;
  ChainPtr chain;
  PkeyPtr key;
  if (!read_certificates(files.cert_chain_pem, leaf, chain, error)) return false;
  if (!read_private_key(files.key_pem, key, error)) return false;
  ERR_clear_error();
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    error = files.key_pem + ": private key does not match the certificate in " + files.cert_chain_pem;
    return false;
  }
  if (!check_validity(files.cert_chain_pem, leaf.get(), now, error)) return false;

  std::vector<std::string> names = certificate_names(leaf.get());
  int key_type = EVP_PKEY_get_base_id(key.get());

  // Same names, other key type: served side by side from one SSL_CTX and OpenSSL picks by the
  // client's signature algorithms and ciphers.
  CertificateSet* set = nullptr;
  for (CertificateSet& candidate : sets_) {
    if (candidate.names != names) continue;
    if (std::find(candidate.key_types.begin(), candidate.key_types.end(), key_type) != candidate.key_types.end()) {
      error = files.cert_chain_pem + ": a " + key_type_name(key.get()) +
              " certificate for the same names is already loaded from " + candidate.files.front();
      return false;
    }
    set = &candidate;
    break;
  }
  if (!set) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
      error = "cannot create an SSL_CTX (" + openssl_reason() + ")";
      return false;
    }
    if (!configure(ctx, error)) {
      SSL_CTX_free(ctx);
      return false;
    }
    std::string sid = session_id_context(names);
    if (!SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>(sid.data()),
                                        static_cast<unsigned int>(sid.size()))) {
      error = "session id context: " + openssl_reason();
      SSL_CTX_free(ctx);
      return false;
    }
    sets_.push_back(CertificateSet{ctx, names, {}, {}});
    set = &sets_.back();
  }
  ERR_clear_error();
  if (SSL_CTX_use_cert_and_key(set->ctx, leaf.get(), key.get(), chain.get(), 1) != 1) {
    error = files.cert_chain_pem + ": rejected by OpenSSL (" + openssl_reason() + ")";
    return false;
  }
  set->key_types.push_back(key_type);
  set->files.push_back(files.cert_chain_pem);
  return true;
}

SSL* TlsContext::new_ssl() const {
  ERR_clear_error();
  SSL* ssl = SSL_new(sets_.front().ctx);
  if (ssl) SSL_set_accept_state(ssl);
  return ssl;
}

bool TlsContext::reload_ticket_keys(std::string& error) const {
  auto next = std::make_shared<TlsTicketKeys>();
  if (!settings_.ticket_key_file.empty()) {
    if (!read_ticket_key_file(settings_.ticket_key_file, next->keys, error)) return false;
  } else {
    next->keys.resize(1);
    if (!random_ticket_key(next->keys.front())) {
      error = "ticket keys: no randomness (" + openssl_reason() + ")";
      return false;
    }
    // Tickets issued until now stay usable for one more rotation period.
    std::shared_ptr<const TlsTicketKeys> current = ticket_keys_.load();
    if (current && !current->keys.empty()) next->keys.push_back(current->keys.front());
  }
  ticket_keys_.store(std::move(next));
  return true;
}

// Picks the certificate set before OpenSSL looks at the offered session (the servername
// callback comes after that), so the session is checked against the set's own id context.
int TlsContext::on_client_hello(SSL* ssl, int*, void* arg) noexcept {
  const auto* self = static_cast<const TlsContext*>(arg);
  std::string name;
  try {
    name = client_hello_sni(ssl);
  } catch (...) {
    return SSL_CLIENT_HELLO_SUCCESS;  // out of memory: the servername callback decides later
  }
  if (name.empty()) return SSL_CLIENT_HELLO_SUCCESS;
  size_t set = self->names_.find(name);
  if (set != npos && set != 0 && SSL_get_SSL_CTX(ssl) != self->sets_[set].ctx) SSL_set_SSL_CTX(ssl, self->sets_[set].ctx);
  return SSL_CLIENT_HELLO_SUCCESS;
}

int TlsContext::on_servername(SSL* ssl, int* alert, void* arg) noexcept {
  return static_cast<const TlsContext*>(arg)->select_certificate(ssl, alert);
}

int TlsContext::select_certificate(SSL* ssl, int* alert) const {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name || !*name) return SSL_TLSEXT_ERR_NOACK;  // no SNI: the default set
  size_t set = names_.find(name);
  if (set == npos) {
    if (!settings_.strict_sni) return SSL_TLSEXT_ERR_NOACK;
    // Otherwise the log would only say "callback failed".
    ERR_raise_data(ERR_LIB_SSL, SSL_R_CALLBACK_FAILED, "strict_sni: no certificate for \"%.255s\"", name);
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  if (set != 0 && SSL_get_SSL_CTX(ssl) != sets_[set].ctx && SSL_set_SSL_CTX(ssl, sets_[set].ctx) == nullptr) {
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  return SSL_TLSEXT_ERR_OK;
}

int TlsContext::on_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                        unsigned int inlen, void* arg) noexcept {
  const std::string& ours = static_cast<const TlsContext*>(arg)->alpn_wire_;
  // Our preference order: the first of our protocols that the client offers.
  for (size_t i = 0; i < ours.size(); i += 1 + static_cast<unsigned char>(ours[i])) {
    std::string_view want(ours.data() + i + 1, static_cast<unsigned char>(ours[i]));
    for (unsigned int j = 0; j < inlen;) {
      unsigned int len = in[j];
      if (len == 0 || j + 1 + len > inlen) break;  // malformed list: OpenSSL checked, be safe
      if (std::string_view(reinterpret_cast<const char*>(in + j + 1), len) == want) {
        *out = in + j + 1;
        *outlen = static_cast<unsigned char>(len);
        return SSL_TLSEXT_ERR_OK;
      }
      j += 1 + len;
    }
  }
  // RFC 7301 3.2: a client that speaks none of our protocols gets no_application_protocol.
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int TlsContext::on_ticket_key(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher_ctx,
                              EVP_MAC_CTX* mac_ctx, int encrypt) noexcept {
  const auto* self = static_cast<const TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (!self) return -1;
  return self->ticket_key(key_name, iv, cipher_ctx, mac_ctx, encrypt);
}

// Returns, as OpenSSL expects: 1 = key set up; 2 = decrypted with an older key, issue a new
// ticket under the current one; 0 = unknown key (full handshake); -1 = failure.
int TlsContext::ticket_key(unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher_ctx,
                           EVP_MAC_CTX* mac_ctx, int encrypt) const {
  std::shared_ptr<const TlsTicketKeys> keys = ticket_keys_.load();
  if (!keys || keys->keys.empty()) return encrypt ? -1 : 0;
  if (encrypt) {
    const TlsTicketKey& key = keys->keys.front();
    int iv_len = EVP_CIPHER_get_iv_length(ticket_cipher_);
    if (iv_len <= 0 || iv_len > EVP_MAX_IV_LENGTH || RAND_bytes(iv, iv_len) != 1) return -1;
    std::memcpy(key_name, key.name.data(), key.name.size());
    if (EVP_EncryptInit_ex2(cipher_ctx, ticket_cipher_, key.aes_key.data(), iv, nullptr) != 1) return -1;
    return set_mac_key(mac_ctx, key.hmac_key) ? 1 : -1;
  }
  size_t index = keys->find(key_name);
  if (index == TlsTicketKeys::npos) return 0;
  const TlsTicketKey& key = keys->keys[index];
  if (EVP_DecryptInit_ex2(cipher_ctx, ticket_cipher_, key.aes_key.data(), iv, nullptr) != 1) return -1;
  if (!set_mac_key(mac_ctx, key.hmac_key)) return -1;
  return index == 0 ? 1 : 2;
}

}  // namespace sprayer::proxy
