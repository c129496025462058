/* Reading small files ahead on worker threads, for the one-pass helpers.
 *
 * Dumping many small files costs a handful of system calls per file (open,
 * read, close) and almost no CPU in user space, so several threads keep the
 * CPUs busy in the kernel where one would not. Workers claim batches of
 * consecutive small files (in NAR order), read them into a slot of a ring,
 * and the dumper (on the caller's thread) takes them in the same order.
 * Batches keep locking and wake-ups to a few per batch instead of per file;
 * the ring bounds memory. Large files are left to the caller's thread
 * (sendfile or big reads). */
#define _GNU_SOURCE
#include "common_internal.h"
#include "nar_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define RA_MAX_FILE (32 * 1024) /* larger files are not read ahead */
#define RA_BATCH 16             /* files per batch */
#define RA_SLOTS 16             /* batches in flight */
#define RA_MAX_THREADS 8

enum slot_state { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };

typedef struct ra_slot {
  uint64_t batch;
  int state;
  narcache__buf data;           /* the batch's files back to back */
  size_t offset[RA_BATCH];      /* where each file starts in `data` */
  int err[RA_BATCH];            /* 0, an errno value, or -1: size changed */
} ra_slot;

struct narcache__readahead {
  narcache_nar_dumper *d;
  uint32_t *files; /* nodes of the small files, in NAR order */
  uint64_t nfiles;
  pthread_mutex_t lock;
  pthread_cond_t ready; /* a slot was filled */
  pthread_cond_t freed; /* a slot was emptied */
  int dumper_waiting;   /* wake only when someone waits: fewer futex calls */
  int workers_waiting;
  uint64_t next_batch;  /* next batch a worker claims */
  uint64_t taken;       /* small files the dumper has finished with */
  int stop;
  ra_slot slots[RA_SLOTS];
  pthread_t threads[RA_MAX_THREADS];
  int nthreads;
};

int narcache__io_threads(void) {
  /* The work is system calls that mostly wait; on the 2-CPU machine of
   * bench/README.md four threads beat two and eight. */
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  long threads = 2 * (cpus < 1 ? 1 : cpus);
  return threads > RA_MAX_THREADS ? RA_MAX_THREADS : (int)threads;
}

/* Append exactly `size` bytes of node `node` to `out`, asking for one more
 * to notice a file that grew. 0, an errno value, or -1 (size changed). */
static int load(narcache__readahead *ra, narcache__dir_chain *chain, uint32_t node,
                narcache__buf *out) {
  uint64_t size = 0;
  narcache__nar_dumper_file_size(ra->d, node, &size);
  if (narcache__buf_reserve(out, (size_t)size + 1) < 0)
    return ENOMEM;
  int fd;
  int err = narcache__nar_dumper_open_node(ra->d, chain, node, &fd);
  if (err != 0)
    return err;
  char *buf = out->data + out->len;
  size_t total = 0;
  while (total <= size) {
    size_t asked = (size_t)size + 1 - total;
    ssize_t n = pread(fd, buf + total, asked, (off_t)total);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      err = errno;
      break;
    }
    total += (size_t)n;
    if ((size_t)n < asked) /* a short read of a regular file is its end */
      break;
  }
  close(fd);
  if (err == 0 && total != size)
    err = -1;
  if (err == 0)
    out->len += total;
  return err;
}

static void load_batch(narcache__readahead *ra, narcache__dir_chain *chain, ra_slot *slot) {
  uint64_t first = slot->batch * RA_BATCH;
  slot->data.len = 0;
  for (uint64_t k = 0; k < RA_BATCH && first + k < ra->nfiles; k++) {
    slot->offset[k] = slot->data.len;
    slot->err[k] = load(ra, chain, ra->files[first + k], &slot->data);
  }
}

static void *worker(void *arg) {
  narcache__readahead *ra = arg;
  narcache__dir_chain chain = {NULL, 0, 0};
  pthread_mutex_lock(&ra->lock);
  while (!ra->stop && ra->next_batch * RA_BATCH < ra->nfiles) {
    ra_slot *slot = &ra->slots[ra->next_batch % RA_SLOTS];
    if (slot->state != SLOT_EMPTY) { /* the ring is full: wait for the dumper */
      ra->workers_waiting++;
      pthread_cond_wait(&ra->freed, &ra->lock);
      ra->workers_waiting--;
      continue;
    }
    slot->batch = ra->next_batch++;
    slot->state = SLOT_LOADING;
    pthread_mutex_unlock(&ra->lock);
    load_batch(ra, &chain, slot); /* the slot is this worker's until ready */
    pthread_mutex_lock(&ra->lock);
    slot->state = SLOT_READY;
    if (ra->dumper_waiting)
      pthread_cond_broadcast(&ra->ready);
  }
  pthread_mutex_unlock(&ra->lock);
  narcache__dir_chain_close(&chain);
  return NULL;
}

static int get_content(void *ctx, uint32_t node, const char **data) {
  narcache__readahead *ra = ctx;
  uint64_t q = ra->taken;
  ra_slot *slot = &ra->slots[(q / RA_BATCH) % RA_SLOTS];
  if (q >= ra->nfiles || ra->files[q] != node)
    return EINVAL; /* out of step: cannot happen without a seek */
  /* The slot cannot change under us once ready: only release() empties it. */
  pthread_mutex_lock(&ra->lock);
  while (slot->state != SLOT_READY || slot->batch != q / RA_BATCH) {
    ra->dumper_waiting = 1;
    pthread_cond_wait(&ra->ready, &ra->lock);
    ra->dumper_waiting = 0;
  }
  pthread_mutex_unlock(&ra->lock);
  *data = slot->data.data + slot->offset[q % RA_BATCH];
  return slot->err[q % RA_BATCH];
}

static void release_content(void *ctx, uint32_t node) {
  narcache__readahead *ra = ctx;
  (void)node;
  uint64_t q = ra->taken++;
  if ((q + 1) % RA_BATCH != 0 && q + 1 != ra->nfiles)
    return; /* the batch still has files to hand out */
  pthread_mutex_lock(&ra->lock);
  ra->slots[(q / RA_BATCH) % RA_SLOTS].state = SLOT_EMPTY;
  if (ra->workers_waiting > 0)
    pthread_cond_broadcast(&ra->freed);
  pthread_mutex_unlock(&ra->lock);
}

static const narcache__nar_content_fn_table content_table = {get_content, release_content};

/* The small files of the index, in NAR order. */
static int list_small_files(narcache__readahead *ra) {
  uint32_t nodes = narcache__nar_dumper_nodes(ra->d);
  uint64_t size;
  for (int pass = 0; pass < 2; pass++) {
    ra->nfiles = 0;
    for (uint32_t i = 0; i < nodes; i++)
      if (narcache__nar_dumper_file_size(ra->d, i, &size) && size > 0 && size <= RA_MAX_FILE) {
        if (pass == 1)
          ra->files[ra->nfiles] = i;
        ra->nfiles++;
      }
    if (pass == 0 && ra->nfiles > 0 &&
        (ra->files = narcache__malloc(ra->nfiles * sizeof *ra->files)) == NULL)
      return NARCACHE_ENOMEM;
  }
  return NARCACHE_OK;
}

int narcache__readahead_start(narcache__readahead **out, narcache_nar_dumper *d) {
  *out = NULL;
  narcache__readahead *ra = narcache__calloc(1, sizeof *ra);
  if (ra == NULL)
    return NARCACHE_ENOMEM;
  ra->d = d;
  int locks = 0;
  if (pthread_mutex_init(&ra->lock, NULL) == 0 && ++locks &&
      pthread_cond_init(&ra->ready, NULL) == 0 && ++locks &&
      pthread_cond_init(&ra->freed, NULL) == 0)
    ++locks;
  if (locks < 3 || list_small_files(ra) < 0 || ra->nfiles < 2 * RA_BATCH) {
    /* Too few small files to be worth threads, or no resources. */
    if (locks >= 3)
      pthread_cond_destroy(&ra->freed);
    if (locks >= 2)
      pthread_cond_destroy(&ra->ready);
    if (locks >= 1)
      pthread_mutex_destroy(&ra->lock);
    narcache__free(ra->files);
    narcache__free(ra);
    return NARCACHE_ENOTSUP;
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
  pthread_cond_broadcast(&ra->freed);
  pthread_mutex_unlock(&ra->lock);
  for (int i = 0; i < ra->nthreads; i++)
    pthread_join(ra->threads[i], NULL);
  narcache__nar_dumper_set_content_source(ra->d, NULL, NULL, 0);
  for (size_t i = 0; i < RA_SLOTS; i++)
    narcache__buf_free(&ra->slots[i].data);
  pthread_cond_destroy(&ra->ready);
  pthread_cond_destroy(&ra->freed);
  pthread_mutex_destroy(&ra->lock);
  narcache__free(ra->files);
  narcache__free(ra);
}
