/*
 * deathwatch.h: notices a client process's death through a pidfd, not only through its
 * connection: a forked child that inherited the socket keeps the connection open after its parent
 * was killed, but the parent's memory must come back at once.
 */
#ifndef MB_DEATHWATCH_H
#define MB_DEATHWATCH_H

#include "broker.h"

typedef struct mb_deathwatch mb_deathwatch;

/* Starts the watcher thread; sessions created from now on are watched (b->death_epfd). 0/-errno. */
int mb_deathwatch_start(mb_broker *b, mb_deathwatch **out);

/* Stops the thread. */
void mb_deathwatch_stop(mb_deathwatch *d);

#endif
