/*
 * io/fdtab.c -- which operations are in flight on which fd, so that weft_close can
 * end them (Go's fdMutex and pollDesc close path, in the small).
 *
 * A hash of NBUCKET buckets by fd, each a lock and a list of struct io_link: the
 * operations that may park (attached by park.c before they are submitted, detached
 * after their final completion), plus, while a weft_close runs, its marker (closing).
 * weft__io_fd_close(fd), under the bucket lock: links the marker (attach of fd now
 * fails with -EBADF), calls cancel on each operation of fd; unlocked: close(2);
 * locked again: unlinks the marker. So an operation either was attached before the
 * marker (and is cancelled) or is refused: none slips in between the cancellation
 * and close(2) to wait forever on a file the kernel keeps open for it.
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
    for (struct io_link *x = b->head; x != NULL; x = x->next)
        if (x->closing && x->fd == fd) {
            weft__unlock(&b->lock);
            return -EBADF;
        }
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
    struct io_link marker = { .fd = fd, .closing = true };
    weft__lock(&b->lock);
    link_in(b, &marker);
    for (struct io_link *x = b->head; x != NULL; x = x->next)
        if (x->fd == fd && !x->closing)
            x->cancel(x);
    weft__unlock(&b->lock);
    /* close(2) once, whatever it says: after EINTR the fd is gone on Linux */
    int rc = close(fd) == 0 ? 0 : -errno;
    weft__lock(&b->lock);
    link_out(b, &marker);
    weft__unlock(&b->lock);
    return rc == -EINTR ? 0 : rc;
}
