/*
 * Prints the routes authz-identity registers, one "METHOD PATTERN" per
 * line, from the same table the server uses (plus the helper's built-in
 * routes), so test_openapi.py can compare them with the OpenAPI spec.
 */
#include <stdio.h>

#include "common/http.h"
#include "identity/service.h"

int main(void)
{
    static const unsigned methods[] = { AZC_HTTP_GET, AZC_HTTP_POST, AZC_HTTP_PUT,
                                        AZC_HTTP_PATCH, AZC_HTTP_DELETE };
    size_t i, j;

    for (i = 0; i < id_routes_count; i++)
        for (j = 0; j < sizeof methods / sizeof methods[0]; j++)
            if (id_routes[i].methods & methods[j])
                printf("%s %s\n", azc_http_method_name(methods[j]), id_routes[i].pattern);
    printf("GET /healthz\nGET /readyz\nGET /metrics\n");
    return 0;
}
