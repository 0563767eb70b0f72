// What a parked Ping gives back while it waits (the worker asks every second): memory that
// its answer, or a retry, can rebuild. Tens of thousands of them wait at once.
#include "proxy/downstream_connection.h"
#include "proxy/exchange.h"
#include "proxy/tls/tls_engine.h"
#include "proxy/upstream_connection.h"

namespace sprayer::proxy {

void DownstreamConnection::rest_if_parked() {
  // The request is all in and its answer has not begun.
  if (state_ != State::in_exchange || !request_complete_ || !exchange_.long_poll() || exchange_.response_started())
    return;
  exchange_.rest();
  parser_.compact();
  // The TLS record layer rebuilds its keys from the traffic secrets at the answer.
  if (tls_) tls_->rest();
}

void Exchange::rest() {
  if (state_ != State::active || !up_ || response_started_ || up_->response_byte_seen()) return;
  if (up_->writer().queued() != 0) return;  // still going out
  std::vector<Piece>().swap(held_);
}

}  // namespace sprayer::proxy
