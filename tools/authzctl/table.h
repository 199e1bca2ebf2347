/*
 * Human tables for authzctl: columns padded to their widest cell (counted
 * in UTF-8 characters), two spaces apart, a header row in capitals.
 * Cells are copied; control characters from servers (a team named with a
 * terminal escape) are printed as '?' so output cannot drive the terminal.
 */
#ifndef CTL_TABLE_H
#define CTL_TABLE_H

#include <stddef.h>
#include <stdio.h>

#define CTL_TABLE_MAX_COLS 12
#define CTL_TABLE_CELL_MAX 96   /* longer cells are cut and end in "..." */

typedef struct ctl_table ctl_table;   /* opaque */

/* A table with `ncols` (1..CTL_TABLE_MAX_COLS) columns named `headers`;
 * NULL when out of memory or ncols is out of range. */
ctl_table *ctl_table_new(const char *const *headers, size_t ncols);

/* Appends a row of ncols cells (NULL prints as "-"); 0, or -1 when out of
 * memory. */
int ctl_table_add(ctl_table *t, const char *const *cells);

/* Number of rows added. */
size_t ctl_table_rows(const ctl_table *t);

/* Prints the header and the rows; trailing spaces are never printed. */
void ctl_table_print(const ctl_table *t, FILE *f);

void ctl_table_free(ctl_table *t);

/* Copies s into buf[len] as a table would print it: control characters
 * as '?', cut at `max` characters with "..." (max >= 4). Returns the
 * number of characters (not bytes) written. */
size_t ctl_cell_clean(const char *s, char *buf, size_t len, size_t max);

#endif
