/*
 * io/fdtab.c -- which operations are in flight on which fd, so that weft_close can
 * end them (Go's fdMutex and pollDesc close path, in the small).
 *
 * A hash of NBUCKET buckets by fd, each a lock and a list of struct io_link: the
 * operations that may park (attached by park.c before they are submitted, detached
 * after their final completion). weft__io_fd_close(fd), under the bucket lock, calls
 * cancel on each operation of fd and then close(2). So an operation either was
 * attached before (and is cancelled) or attaches after the close (and its submission
 * fails with EBADF, or finds the number's next file): none slips in between the
 * cancellation and close(2) to wait forever on a file the kernel keeps open for it.
 *
 * Cost: an operation that parks takes its bucket lock twice (~40 ns); one that the
 * nonblocking system call finished never comes here. weft_close of an fd with
 * nothing in flight: one lock, a short list walk.
 *
 * Callers: park.c, api.c (weft_close). Calls down: nothing but the lock and close(2).
 */
#include <errno.h>
#include <unistd.h>
#include "io/io.h"

#define NBUCKET 4096

static struct bucket {
    weft_lock lock;
    struct io_link *head;
} buckets[NBUCKET];

static struct bucket *bucket_of(int fd)
{
    return &buckets[(unsigned)fd % NBUCKET];
}

static void link_in(struct bucket *b, struct io_link *l)
{
    l->prev = NULL;
    l->next = b->head;
    if (b->head != NULL)
        b->head->prev = l;
    b->head = l;
}

static void link_out(struct bucket *b, struct io_link *l)
{
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        b->head = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

int weft__io_fd_attach(struct io_link *l, int fd)
{
    struct bucket *b = bucket_of(fd);
    weft__lock(&b->lock);
    l->fd = fd;
    link_in(b, l);
    weft__unlock(&b->lock);
    return 0;
}

void weft__io_fd_detach(struct io_link *l)
{
    struct bucket *b = bucket_of(l->fd);
    weft__lock(&b->lock);
    link_out(b, l);
    weft__unlock(&b->lock);
    l->fd = -1;
}

int weft__io_fd_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    struct bucket *b = bucket_of(fd);
    /* close(2) under the bucket lock: no operation of fd can attach between the
     * cancellation and the close, and the number, once closed and reused by another
     * thread's accept or open, attaches again at once (a marker unlinked after the
     * close refused the new fd with -EBADF) */
    weft__lock(&b->lock);
    for (struct io_link *x = b->head; x != NULL; x = x->next)
        if (x->fd == fd)
            x->cancel(x);
    /* once, whatever it says: after EINTR the fd is gone on Linux */
    int rc = close(fd) == 0 ? 0 : -errno;
    weft__unlock(&b->lock);
    return rc == -EINTR ? 0 : rc;
}
