// The queue between workers and the control thread.
#include "proxy/health_events.h"

namespace sprayer::proxy {

void HealthEvents::open(uv_loop_t* loop, Consumer consumer) {
  consumer_ = std::move(consumer);
  uv_async_init(loop, &async_, &HealthEvents::on_async);
  async_.data = this;
  std::lock_guard<std::mutex> lock(mutex_);
  open_ = true;
}

void HealthEvents::close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!open_) return;
    open_ = false;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
}

void HealthEvents::report(PassiveEvent event) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!open_) return;
  queue_.push_back(event);
  uv_async_send(&async_);
}

void HealthEvents::on_async(uv_async_t* handle) noexcept {
  auto* self = static_cast<HealthEvents*>(handle->data);
  std::vector<PassiveEvent> events;
  {
    std::lock_guard<std::mutex> lock(self->mutex_);
    events.swap(self->queue_);
  }
  if (!events.empty() && self->consumer_) self->consumer_(events);
}

}  // namespace sprayer::proxy
