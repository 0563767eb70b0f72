#define _GNU_SOURCE
/* An HTTPS client on wolfSSL, for the interop suite: one request per connection, optionally
 * with max_fragment_length (RFC 6066), a KeyUpdate of its own before the request, and a second
 * connection resuming the first one's session. Prints one line per connection:
 *   version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 resumed=0 status=200 bytes=5000
 * Usage: wolfssl_client PORT CA_FILE VERSION(1.2|1.3) CIPHER_LIST PATH [mfl512] [keyupdate]
 *        [resume] [upload=N] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

static int connect_port(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr*)&addr, sizeof addr) != 0) return -1;
  return fd;
}

/* Reads the whole response (the server closes or the body ends); returns its status code. */
static int read_response(WOLFSSL* ssl, long* body_bytes) {
  static char buf[1 << 16];
  size_t have = 0;
  long content_length = -1, status = -1;
  char* body = NULL;
  *body_bytes = 0;
  for (;;) {
    int n = wolfSSL_read(ssl, buf + have, (int)(sizeof buf - 1 - have));
    if (n <= 0) break;
    if (!body) {
      have += (size_t)n;
      buf[have] = 0;
      char* end = strstr(buf, "\r\n\r\n");
      if (!end) continue;
      sscanf(buf, "HTTP/1.1 %ld", &status);
      char* cl = strcasestr(buf, "\r\nContent-Length:");
      if (cl) content_length = atol(cl + 17);
      body = end + 4;
      *body_bytes = (long)(buf + have - body);
      have = 0;
    } else {
      *body_bytes += n;
    }
    if (content_length >= 0 && *body_bytes >= content_length) break;
  }
  return (int)status;
}

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: wolfssl_client PORT CA VERSION CIPHERS PATH [mfl512] [keyupdate] [resume] [upload=N]\n");
    return 2;
  }
  int port = atoi(argv[1]);
  int mfl = 0, keyupdate = 0, resume = 0;
  long upload = 0;
  for (int i = 6; i < argc; ++i) {
    if (!strcmp(argv[i], "mfl512")) mfl = 1;
    else if (!strcmp(argv[i], "keyupdate")) keyupdate = 1;
    else if (!strcmp(argv[i], "resume")) resume = 1;
    else if (!strncmp(argv[i], "upload=", 7)) upload = atol(argv[i] + 7);
  }
  wolfSSL_Init();
  WOLFSSL_CTX* ctx = wolfSSL_CTX_new(!strcmp(argv[3], "1.2") ? wolfTLSv1_2_client_method() : wolfTLSv1_3_client_method());
  if (!ctx || wolfSSL_CTX_load_verify_locations(ctx, argv[2], NULL) != WOLFSSL_SUCCESS ||
      wolfSSL_CTX_set_cipher_list(ctx, argv[4]) != WOLFSSL_SUCCESS) {
    fprintf(stderr, "context setup failed\n");
    return 1;
  }
  WOLFSSL_SESSION* session = NULL;
  int rc = 0;
  for (int round = 0; round < (resume ? 2 : 1); ++round) {
    int fd = connect_port(port);
    WOLFSSL* ssl = fd < 0 ? NULL : wolfSSL_new(ctx);
    if (!ssl) {
      fprintf(stderr, "connect failed\n");
      return 1;
    }
    wolfSSL_set_fd(ssl, fd);
    wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, "mail.example.com", (unsigned short)strlen("mail.example.com"));
    wolfSSL_check_domain_name(ssl, "mail.example.com");
    if (mfl) wolfSSL_UseMaxFragment(ssl, WOLFSSL_MFL_2_9);
    if (session) wolfSSL_set_session(ssl, session);
    if (wolfSSL_connect(ssl) != WOLFSSL_SUCCESS) {
      char err[80];
      fprintf(stderr, "handshake failed: %s\n", wolfSSL_ERR_error_string((unsigned long)wolfSSL_get_error(ssl, 0), err));
      return 1;
    }
    if (keyupdate && wolfSSL_update_keys(ssl) != WOLFSSL_SUCCESS) {
      fprintf(stderr, "key update failed\n");
      return 1;
    }
    char head[512];
    int head_len = upload > 0
        ? snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: mail.example.com\r\nContent-Length: %ld\r\n"
                   "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n", argv[5], upload)
        : snprintf(head, sizeof head, "GET %s HTTP/1.1\r\nHost: mail.example.com\r\nConnection: close\r\n\r\n", argv[5]);
    if (wolfSSL_write(ssl, head, head_len) != head_len) return 1;
    static char chunk[16384];
    for (long left = upload; left > 0;) {
      int n = left > (long)sizeof chunk ? (int)sizeof chunk : (int)left;
      for (int i = 0; i < n; ++i) chunk[i] = (char)('a' + (upload - left + i) % 26);
      if (wolfSSL_write(ssl, chunk, n) != n) return 1;
      left -= n;
    }
    long bytes = 0;
    int status = read_response(ssl, &bytes);
    printf("version=%s cipher=%s resumed=%d status=%d bytes=%ld\n", wolfSSL_get_version(ssl),
           wolfSSL_get_cipher_name(ssl), wolfSSL_session_reused(ssl), status, bytes);
    if (status != 200) rc = 1;
    if (!session) session = wolfSSL_get1_session(ssl);
    wolfSSL_shutdown(ssl);
    wolfSSL_free(ssl);
    close(fd);
  }
  wolfSSL_SESSION_free(session);
  wolfSSL_CTX_free(ctx);
  wolfSSL_Cleanup();
  return rc;
}
