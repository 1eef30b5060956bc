/*
 * deathwatch.c: an epoll set of the clients' pidfds; a readable pidfd means the process exited.
 */
#include "deathwatch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"

struct mb_deathwatch {
	mb_broker *broker;
	int stop_fd;
	pthread_t thread;
};

static void *run(void *arg)
{
	mb_deathwatch *d = arg;
	struct epoll_event ev[32];

	for (;;) {
		int n = epoll_wait(d->broker->death_epfd, ev, 32, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			mb_log(LOG_ERR, "client death watch failed: %s", strerror(errno));
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == UINT64_MAX)
				return NULL; /* stop_fd */
			mb_broker_process_exited(d->broker, ev[i].data.u64);
		}
	}
}

int mb_deathwatch_start(mb_broker *b, mb_deathwatch **out)
{
	mb_deathwatch *d = calloc(1, sizeof(*d));
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
	int rv;

	if (d == NULL)
		return -ENOMEM;
	d->broker = b;
	d->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (d->stop_fd < 0 || b->death_epfd < 0 ||
	    epoll_ctl(b->death_epfd, EPOLL_CTL_ADD, d->stop_fd, &ev) != 0) {
		rv = -errno;
		goto fail;
	}
	if ((rv = pthread_create(&d->thread, NULL, run, d)) != 0) {
		rv = -rv;
		goto fail;
	}
	*out = d;
	return 0;
fail:
	if (d->stop_fd >= 0)
		close(d->stop_fd);
	free(d);
	return rv;
}

void mb_deathwatch_stop(mb_deathwatch *d)
{
	uint64_t one = 1;

	if (d == NULL)
		return;
	if (write(d->stop_fd, &one, sizeof(one)) != sizeof(one))
		mb_log(LOG_WARNING, "cannot wake the death watch thread");
	pthread_join(d->thread, NULL);
	close(d->stop_fd);
	free(d);
}
