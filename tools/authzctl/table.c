/* authzctl's table formatting; see table.h. */
#include "tools/authzctl/table.h"

#include <stdlib.h>
#include <string.h>

struct ctl_table {
    size_t ncols;
    char *headers[CTL_TABLE_MAX_COLS];
    char **cells;              /* rows * ncols, row-major */
    size_t *chars;             /* width in characters of each cell */
    size_t nrows, cap;
};

/* Bytes of the UTF-8 sequence starting with lead byte c (1 for a stray
 * continuation byte, which is then printed as '?'). */
static size_t seq_len(unsigned char c)
{
    return c >= 0xf0 && c < 0xf8 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* Length of the character at s[i] (n bytes in all); 0 when it is not
 * well-formed UTF-8 (then printed as '?', one byte). */
static size_t char_len(const char *s, size_t i, size_t n)
{
    unsigned char c = (unsigned char)s[i];
    size_t k = seq_len(c), j;

    if (c >= 0x80 && c < 0xc0)
        return 0;
    for (j = 1; j < k; j++) {
        if (i + j >= n || ((unsigned char)s[i + j] & 0xc0) != 0x80)
            return 0;
    }
    return k;
}

size_t ctl_cell_clean(const char *s, char *buf, size_t len, size_t max)
{
    size_t i, o = 0, chars = 0, total = 0, n = strlen(s), keep;

    for (i = 0; i < n; total++) {
        size_t k = char_len(s, i, n);

        i += k == 0 ? 1 : k;
    }
    keep = total <= max ? total : max - 3;
    for (i = 0; i < n && chars < keep; chars++) {
        unsigned char c = (unsigned char)s[i];
        size_t k = char_len(s, i, n);

        if (o + (k == 0 ? 1 : k) + 4 > len)
            break;
        if (k == 0 || c < 0x20 || c == 0x7f) {
            buf[o++] = '?';
            i += k == 0 ? 1 : k;
        } else {
            memcpy(buf + o, s + i, k);
            o += k;
            i += k;
        }
    }
    if (chars < total) {
        memcpy(buf + o, "...", 3);
        o += 3;
        chars += 3;
    }
    buf[o] = '\0';
    return chars;
}

ctl_table *ctl_table_new(const char *const *headers, size_t ncols)
{
    ctl_table *t;
    size_t i;

    if (ncols == 0 || ncols > CTL_TABLE_MAX_COLS)
        return NULL;
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->ncols = ncols;
    for (i = 0; i < ncols; i++) {
        if ((t->headers[i] = strdup(headers[i])) == NULL) {
            ctl_table_free(t);
            return NULL;
        }
    }
    return t;
}

int ctl_table_add(ctl_table *t, const char *const *cells)
{
    char buf[CTL_TABLE_CELL_MAX * 4 + 4];
    size_t i, base;

    if (t->nrows == t->cap) {
        size_t cap = t->cap == 0 ? 16 : t->cap * 2;
        char **c = realloc(t->cells, cap * t->ncols * sizeof *c);
        size_t *w;

        if (c == NULL)
            return -1;
        t->cells = c;
        w = realloc(t->chars, cap * t->ncols * sizeof *w);
        if (w == NULL)
            return -1;
        t->chars = w;
        t->cap = cap;
    }
    base = t->nrows * t->ncols;
    for (i = 0; i < t->ncols; i++) {
        t->chars[base + i] = ctl_cell_clean(cells[i] != NULL ? cells[i] : "-", buf, sizeof buf,
                                            CTL_TABLE_CELL_MAX);
        if ((t->cells[base + i] = strdup(buf)) == NULL) {
            while (i-- > 0)
                free(t->cells[base + i]);
            return -1;
        }
    }
    t->nrows++;
    return 0;
}

size_t ctl_table_rows(const ctl_table *t)
{
    return t->nrows;
}

static void print_row(FILE *f, const ctl_table *t, char *const *cells, const size_t *chars,
                      const size_t *width)
{
    size_t i, k, last = 0;

    /* Padding stops at the last non-empty cell: no trailing spaces. */
    for (i = 0; i < t->ncols; i++) {
        if (cells[i][0] != '\0')
            last = i;
    }
    for (i = 0; i <= last; i++) {
        fputs(cells[i], f);
        if (i < last) {
            for (k = chars[i]; k < width[i] + 2; k++)
                fputc(' ', f);
        }
    }
    fputc('\n', f);
}

void ctl_table_print(const ctl_table *t, FILE *f)
{
    size_t width[CTL_TABLE_MAX_COLS], hchars[CTL_TABLE_MAX_COLS];
    size_t i, r;

    for (i = 0; i < t->ncols; i++) {
        hchars[i] = strlen(t->headers[i]);
        width[i] = hchars[i];
        for (r = 0; r < t->nrows; r++) {
            if (t->chars[r * t->ncols + i] > width[i])
                width[i] = t->chars[r * t->ncols + i];
        }
    }
    print_row(f, t, t->headers, hchars, width);
    for (r = 0; r < t->nrows; r++)
        print_row(f, t, t->cells + r * t->ncols, t->chars + r * t->ncols, width);
}

void ctl_table_free(ctl_table *t)
{
    size_t i;

    if (t == NULL)
        return;
    for (i = 0; i < t->ncols; i++)
        free(t->headers[i]);
    for (i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t->chars);
    free(t);
}
