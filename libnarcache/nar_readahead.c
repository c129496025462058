/* Reading small files ahead on worker threads, for the one-pass helpers.
 *
 * Dumping many small files costs a handful of system calls per file (open,
 * read, close) and almost no CPU in user space, so several threads keep
 * the CPUs busy in the kernel where one would not. Workers claim small files in NAR order, read each into a slot
 * of a ring, and the dumper (on the caller's thread) takes them in the same
 * order. The ring bounds memory: RA_SLOTS files of at most RA_MAX_FILE bytes.
 * Large files are left to the caller's thread (sendfile or big reads). */
#define _GNU_SOURCE
#include "common_internal.h"
#include "nar_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define RA_SLOTS 128
#define RA_MAX_FILE (32 * 1024)
#define RA_MAX_THREADS 8

enum slot_state { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };

typedef struct ra_slot {
  uint32_t node;
  int state;
  int err; /* 0, an errno value, or -1 for a size change */
  char *buf;
} ra_slot;

struct narcache__readahead {
  narcache_nar_dumper *d;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  uint32_t scan;    /* next node the workers look at */
  uint64_t claimed; /* small files claimed by workers, in NAR order */
  uint64_t taken;   /* small files the dumper has finished with */
  int stop;
  ra_slot slots[RA_SLOTS];
  pthread_t threads[RA_MAX_THREADS];
  int nthreads;
};

static int is_small(const narcache_nar_dumper *d, uint32_t i, uint64_t *size) {
  return narcache__nar_dumper_file_size(d, i, size) && *size > 0 && *size <= RA_MAX_FILE;
}

/* Read exactly `size` bytes of node `node` into `buf`, asking for one more
 * to notice a file that grew. */
static int load(narcache__readahead *ra, narcache__dir_chain *chain, uint32_t node,
                uint64_t size, char *buf) {
  int fd;
  int err = narcache__nar_dumper_open_node(ra->d, chain, node, &fd);
  if (err != 0)
    return err;
  size_t total = 0;
  while (total <= size) {
    ssize_t n = pread(fd, buf + total, (size_t)size + 1 - total, (off_t)total);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0)
      break;
    total += (size_t)n;
  }
  close(fd);
  if (err == 0 && total != size)
    err = -1;
  return err;
}

static void *worker(void *arg) {
  narcache__readahead *ra = arg;
  narcache__dir_chain chain = {NULL, 0, 0};
  uint32_t nodes = narcache__nar_dumper_nodes(ra->d);
  pthread_mutex_lock(&ra->lock);
  while (!ra->stop) {
    uint64_t size = 0;
    while (ra->scan < nodes && !is_small(ra->d, ra->scan, &size))
      ra->scan++;
    if (ra->scan == nodes)
      break;
    ra_slot *slot = &ra->slots[ra->claimed % RA_SLOTS];
    if (slot->state != SLOT_EMPTY) { /* the ring is full: wait for the dumper */
      pthread_cond_wait(&ra->changed, &ra->lock);
      continue;
    }
    uint32_t node = ra->scan++;
    ra->claimed++;
    slot->node = node;
    slot->state = SLOT_LOADING;
    pthread_mutex_unlock(&ra->lock);
    /* The slot is this worker's until it is marked ready. */
    int err = ENOMEM;
    if (slot->buf == NULL)
      slot->buf = narcache__malloc(RA_MAX_FILE + 1);
    if (slot->buf != NULL)
      err = load(ra, &chain, node, size, slot->buf);
    pthread_mutex_lock(&ra->lock);
    slot->err = err;
    slot->state = SLOT_READY;
    pthread_cond_broadcast(&ra->changed);
  }
  pthread_mutex_unlock(&ra->lock);
  narcache__dir_chain_close(&chain);
  return NULL;
}

static int get_content(void *ctx, uint32_t node, const char **data) {
  narcache__readahead *ra = ctx;
  pthread_mutex_lock(&ra->lock);
  ra_slot *slot = &ra->slots[ra->taken % RA_SLOTS];
  while (slot->state != SLOT_READY || slot->node != node) {
    if (ra->nthreads == 0 || (slot->state == SLOT_READY && slot->node != node)) {
      pthread_mutex_unlock(&ra->lock);
      return EINVAL; /* out of step: cannot happen without a seek */
    }
    pthread_cond_wait(&ra->changed, &ra->lock);
  }
  int err = slot->err;
  *data = slot->buf;
  pthread_mutex_unlock(&ra->lock);
  return err;
}

static void release_content(void *ctx, uint32_t node) {
  narcache__readahead *ra = ctx;
  (void)node;
  pthread_mutex_lock(&ra->lock);
  ra->slots[ra->taken % RA_SLOTS].state = SLOT_EMPTY;
  ra->taken++;
  pthread_cond_broadcast(&ra->changed);
  pthread_mutex_unlock(&ra->lock);
}

int narcache__io_threads(void) {
  /* The work is system calls that mostly wait; two threads per CPU measured
   * best on a 2-CPU machine (bench/README.md). */
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  long threads = 2 * (cpus < 1 ? 1 : cpus);
  return threads > RA_MAX_THREADS ? RA_MAX_THREADS : (int)threads;
}

static const narcache__nar_content_fn_table content_table = {get_content, release_content};

int narcache__readahead_start(narcache__readahead **out, narcache_nar_dumper *d) {
  *out = NULL;
  narcache__readahead *ra = narcache__calloc(1, sizeof *ra);
  if (ra == NULL)
    return NARCACHE_ENOMEM;
  ra->d = d;
  if (pthread_mutex_init(&ra->lock, NULL) != 0) {
    narcache__free(ra);
    return NARCACHE_ENOMEM;
  }
  if (pthread_cond_init(&ra->changed, NULL) != 0) {
    pthread_mutex_destroy(&ra->lock);
    narcache__free(ra);
    return NARCACHE_ENOMEM;
  }
  int want = narcache__io_threads();
  pthread_mutex_lock(&ra->lock);
  for (int i = 0; i < want; i++)
    if (pthread_create(&ra->threads[ra->nthreads], NULL, worker, ra) == 0)
      ra->nthreads++;
  pthread_mutex_unlock(&ra->lock);
  if (ra->nthreads == 0) {
    narcache__readahead_stop(ra);
    return NARCACHE_ENOMEM;
  }
  narcache__nar_dumper_set_content_source(d, &content_table, ra, RA_MAX_FILE);
  *out = ra;
  return NARCACHE_OK;
}

void narcache__readahead_stop(narcache__readahead *ra) {
  if (ra == NULL)
    return;
  pthread_mutex_lock(&ra->lock);
  ra->stop = 1;
  pthread_cond_broadcast(&ra->changed);
  pthread_mutex_unlock(&ra->lock);
  for (int i = 0; i < ra->nthreads; i++)
    pthread_join(ra->threads[i], NULL);
  narcache__nar_dumper_set_content_source(ra->d, NULL, NULL, 0);
  for (size_t i = 0; i < RA_SLOTS; i++)
    narcache__free(ra->slots[i].buf);
  pthread_cond_destroy(&ra->changed);
  pthread_mutex_destroy(&ra->lock);
  narcache__free(ra);
}
