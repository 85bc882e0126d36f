package pglocal

import (
	"strconv"
	"strings"
	"testing"
)

func TestCreateDatabase(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	for _, name := range []string{"orders_test", "Mixed Case-db"} {
		url, err := s.CreateDatabase(t.Context(), name)
		if err != nil {
			t.Fatalf("CreateDatabase(%q): %v", name, err)
		}
		conn := connect(t, url)
		var got string
		if err := conn.QueryRow(t.Context(), "select current_database()").Scan(&got); err != nil {
			t.Fatalf("%q: current_database: %v", name, err)
		}
		if got != name {
			t.Errorf("CreateDatabase(%q): connected to %q, want %q", name, got, name)
		}
	}
	if _, err := s.CreateDatabase(t.Context(), "orders_test"); err == nil {
		t.Error("CreateDatabase of an existing name: got nil error, want failure")
	}
}

// CreateDatabase works on any server URL: credentials and query string
// survive, only the database changes.
func TestCreateDatabaseByURL(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	// Trust auth ignores the password; it is there to see it survive.
	serverURL := "postgres://postgres:pw@127.0.0.1:" + strconv.Itoa(s.Port()) +
		"/postgres?sslmode=disable&application_name=x"
	const name = "by_url"
	got, err := CreateDatabase(t.Context(), serverURL, name)
	if err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	want := "postgres://postgres:pw@127.0.0.1:" + strconv.Itoa(s.Port()) +
		"/" + name + "?sslmode=disable&application_name=x"
	if got != want {
		t.Errorf("CreateDatabase URL = %q, want %q", got, want)
	}

	conn := connect(t, got)
	var db, app string
	if err := conn.QueryRow(t.Context(), "select current_database(), current_setting('application_name')").Scan(&db, &app); err != nil {
		t.Fatalf("query: %v", err)
	}
	if db != name {
		t.Errorf("current_database() = %q, want %q", db, name)
	}
	if app != "x" {
		t.Errorf("application_name = %q, want %q (query string lost)", app, "x")
	}

	const odd = "a b/c?d"
	oddURL, err := CreateDatabase(t.Context(), serverURL, odd)
	if err != nil {
		t.Fatalf("CreateDatabase(%q): %v", odd, err)
	}
	if err := connect(t, oddURL).QueryRow(t.Context(), "select current_database()").Scan(&db); err != nil {
		t.Fatalf("%q: current_database: %v", odd, err)
	}
	if db != odd {
		t.Errorf("current_database() = %q, want %q", db, odd)
	}
}

func TestCreateDatabaseErrors(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	serverURL := s.URL() + "&application_name=x"

	if _, err := CreateDatabase(t.Context(), serverURL, "twice"); err != nil {
		t.Fatalf("first CreateDatabase: %v", err)
	}
	if _, err := CreateDatabase(t.Context(), serverURL, "twice"); err == nil ||
		!strings.Contains(err.Error(), `pglocal: create database "twice": `) {
		t.Errorf("second CreateDatabase of the same name: got %v, want a pglocal: create database error", err)
	}
	for _, name := range []string{"", "nul\x00byte"} {
		if _, err := CreateDatabase(t.Context(), serverURL, name); err == nil {
			t.Errorf("CreateDatabase(%q): got nil error, want failure", name)
		}
	}
	if _, err := CreateDatabase(t.Context(), "host=127.0.0.1 user=postgres", "kv"); err == nil {
		t.Error("CreateDatabase with a keyword/value DSN: got nil error, want failure")
	}
}

// The method keeps returning exactly the URL it always did.
func TestServerCreateDatabaseURL(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	got, err := s.CreateDatabase(t.Context(), "Mixed Case-db")
	if err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	if want := urlFor(s.Port(), "Mixed Case-db"); got != want {
		t.Errorf("CreateDatabase URL = %q, want %q", got, want)
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ in, name, want string }{
		{"postgres://u:p%40ss@db.example:5432/app?sslmode=disable&application_name=x", "t1",
			"postgres://u:p%40ss@db.example:5432/t1?sslmode=disable&application_name=x"},
		{"postgresql://u@127.0.0.1:32768", "t2", "postgresql://u@127.0.0.1:32768/t2"},
		{"postgres:///app?host=/var/run/postgresql", "t3", "postgres:///t3?host=/var/run/postgresql"},
		{"postgres://u@h/app?dbname=app&sslmode=disable", "t4", "postgres://u@h/t4?sslmode=disable"},
		// pgx and libpq take the database as the whole decoded path, slash and all.
		{"postgres://u@h/app", "a b/c?", "postgres://u@h/a%20b/c%3F"},
	} {
		got, err := withDatabase(tc.in, tc.name)
		if err != nil {
			t.Errorf("withDatabase(%q, %q): %v", tc.in, tc.name, err)
			continue
		}
		if got != tc.want {
			t.Errorf("withDatabase(%q, %q) = %q, want %q", tc.in, tc.name, got, tc.want)
		}
	}
	if _, err := withDatabase("postgres://u:secret@h:bad port/db", "x"); err == nil {
		t.Error("withDatabase of an unparsable URL: got nil error")
	} else if strings.Contains(err.Error(), "secret") {
		t.Errorf("withDatabase error leaks the password: %v", err)
	}
}
