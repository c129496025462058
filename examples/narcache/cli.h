/* Shared declarations of the narcache CLI's subcommands. */
#ifndef NARCACHE_CLI_H
#define NARCACHE_CLI_H

int cmd_hash(int argc, char **argv);
int cmd_nar(int argc, char **argv);

/* Print "narcache: MESSAGE" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
