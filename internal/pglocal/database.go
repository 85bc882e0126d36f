package pglocal

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Creating databases, on a Server or on any PostgreSQL server by URL.

// CreateDatabase creates database name and returns its superuser URL, so
// tests can isolate themselves on one shared server.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	return CreateDatabase(ctx, s.URL(), name)
}

// CreateDatabase creates database name on the server at serverURL (any
// PostgreSQL URL whose user may create databases) and returns serverURL
// with its database replaced by name.
func CreateDatabase(ctx context.Context, serverURL, name string) (string, error) {
	dbURL, err := withDatabase(serverURL, name)
	if err != nil {
		return "", fmt.Errorf("pglocal: create database %q: %w", name, err)
	}
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", fmt.Errorf("pglocal: create database %q: connect: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pglocal: create database %q: %w", name, err)
	}
	return dbURL, nil
}

// withDatabase returns serverURL with its path replaced by name; user,
// password, host and query string stay. It is checked before anything is
// created, so a URL it cannot rewrite leaves no database behind.
func withDatabase(serverURL, name string) (string, error) {
	// Identifier.Sanitize drops NUL bytes, so such a name would create a
	// database other than the one the returned URL names.
	if name == "" || strings.ContainsRune(name, 0) {
		return "", errors.New("invalid database name")
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		// url.Error quotes the whole URL, password included; keep only why.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("parse server URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("server URL scheme %q: want postgres or postgresql", u.Scheme)
	}
	u.Path, u.RawPath = "/"+name, ""
	// A dbname parameter overrides the path in libpq and pgx; left in, it
	// would point the returned URL at the old database.
	if q := u.Query(); q.Has("dbname") {
		q.Del("dbname")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}
