/* cli_queue.h -- `chappe queue`: the outbound queue's destinations, entries and dead letters, and
 * the operator's retry, requeue and delete, from the command line. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_CLI_QUEUE_H
#define CHAPPE_CLI_QUEUE_H

/*
 * Run `chappe queue ...`: argv[0] is "queue", then a subcommand (list, show
 * DEST, retry DEST, dead, dead show|requeue|delete ID) and the options -c FILE,
 * --json, -h. It opens the store of the configuration's queue.path without
 * the daemon's lock, so it works beside a running relay (LMDB serialises the
 * writers of both processes). Prints to stdout and stderr; returns the exit
 * status: 0 done, 1 not found or refused (an unknown destination or id, the
 * queue full, a record that cannot be read), 2 a usage error, a configuration
 * that is not valid, or a store that cannot be opened.
 */
int cmd_queue(int argc, char **argv);

#endif
