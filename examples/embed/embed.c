/* Embedding the narcache server in a program that owns its libuv loop.
 *
 * The program has handles of its own on the loop (a timer ticking, a
 * signal watcher for SIGINT/SIGTERM) and adds a server answering from a
 * binary-cache directory to that same loop. On the signal it asks the
 * server to stop; when the server says it has stopped, the program closes
 * its own handles, the loop runs out of work, and everything is freed.
 *
 *   embed CACHE_DIR [ADDRESS]       ADDRESS: HOST:PORT (127.0.0.1:0 picks
 *                                   a free port), [V6]:PORT or unix:PATH
 *
 * Build against an installed libnarcache:
 *   cc embed.c $(pkg-config --cflags --libs narcache libuv)
 */
#define _POSIX_C_SOURCE 200809L /* uv.h needs POSIX types under strict C */
#include <narcache.h>

#include <signal.h>
#include <stdio.h>
#include <uv.h>

typedef struct app {
  uv_loop_t loop;
  uv_timer_t tick;
  uv_signal_t sigint, sigterm;
  narcache_server *server;
  unsigned ticks;
} app;

static void on_tick(uv_timer_t *t) {
  app *a = t->data;
  printf("tick %u: %s\n", ++a->ticks,
         narcache_server_is_healthy(a->server) ? "server healthy" : "server not healthy");
  fflush(stdout);
}

static void on_signal(uv_signal_t *h, int signum) {
  app *a = h->data;
  printf("signal %d: stopping\n", signum);
  fflush(stdout);
  narcache_server_stop(a->server); /* graceful: responses in flight finish */
}

/* Hooks: called on the loop thread. */
static void on_listening(void *userdata, narcache_server *server) {
  (void)userdata;
  char address[200];
  for (size_t i = 0; i < narcache_server_listener_count(server); i++)
    if (narcache_server_address(server, i, address, sizeof address) == 0)
      printf("listening on %s\n", address);
  fflush(stdout);
}

static void close_own_handles(app *a) {
  uv_close((uv_handle_t *)&a->tick, NULL);
  uv_close((uv_handle_t *)&a->sigint, NULL);
  uv_close((uv_handle_t *)&a->sigterm, NULL);
}

static void on_stopped(void *userdata, narcache_server *server) {
  (void)server;
  close_own_handles(userdata); /* the server's handles are all closed */
}

static void on_log(void *userdata, const narcache_log_record *r) {
  (void)userdata;
  fprintf(stderr, "embed: %s: %s", r->event, r->message);
  for (size_t i = 0; i < r->n_fields; i++)
    fprintf(stderr, " %s=%s", r->fields[i].key, r->fields[i].value);
  fputc('\n', stderr);
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s CACHE_DIR [ADDRESS]\n", argv[0]);
    return 2;
  }
  if (narcache_init() < 0)
    return 1;
  narcache_store *store = NULL;
  int rc = narcache_store_dir_new(&store, argv[1], 0);
  if (rc < 0) {
    fprintf(stderr, "embed: %s: %s\n", argv[1], narcache_strerror(rc));
    return 1;
  }
  app a = {0};
  if (uv_loop_init(&a.loop) != 0)
    return 1;
  /* The program's own handles. */
  uv_timer_init(&a.loop, &a.tick);
  uv_signal_init(&a.loop, &a.sigint);
  uv_signal_init(&a.loop, &a.sigterm);
  a.tick.data = a.sigint.data = a.sigterm.data = &a;
  uv_timer_start(&a.tick, on_tick, 500, 500);
  uv_signal_start(&a.sigint, on_signal, SIGINT);
  uv_signal_start(&a.sigterm, on_signal, SIGTERM);

  /* The server, on the same loop. */
  narcache_server_hooks hooks = {.version = NARCACHE_SERVER_HOOKS_VERSION,
                                 .listening = on_listening,
                                 .stopped = on_stopped,
                                 .log = on_log};
  int status = 1;
  if (narcache_server_new(&a.server, &a.loop, store) == 0 &&
      narcache_server_set_hooks(a.server, &hooks, &a) == 0 &&
      narcache_server_listen(a.server, argc > 2 ? argv[2] : "127.0.0.1:0", 0) == 0 &&
      narcache_server_start(a.server) == 0)
    status = 0;
  else
    close_own_handles(&a); /* not started: no `stopped` hook will come */

  uv_run(&a.loop, UV_RUN_DEFAULT); /* until every handle is closed */
  narcache_server_free(a.server);
  if (uv_loop_close(&a.loop) != 0) {
    fprintf(stderr, "embed: handles left on the loop\n");
    status = 1;
  }
  narcache_store_free(store);
  narcache_shutdown();
  if (status == 0)
    printf("stopped cleanly after %u ticks\n", a.ticks);
  return status;
}
