package chhttp

import "testing"

func TestParseStatement(t *testing.T) {
	for _, c := range []struct {
		sql, body, format string
		code              int // 0: accepted
	}{
		{sql: "SELECT 1", body: "SELECT 1"},
		{sql: "  select 1 FORMAT JSON ; ", body: "  select 1", format: "JSON"},
		{sql: "(SELECT 1) UNION ALL (SELECT 2)", body: "(SELECT 1) UNION ALL (SELECT 2)"},
		{sql: "WITH 1 AS x SELECT x -- trailing comment", body: "WITH 1 AS x SELECT x"},
		{sql: "SELECT format FROM t", body: "SELECT format FROM t"},
		{sql: "SELECT 'a;b', \"c;d\", `e;f` /* ; */ FORMAT TSV", body: "SELECT 'a;b', \"c;d\", `e;f`", format: "TSV"},
		{sql: "SELECT 'it''s', 'a\\'b' FORMAT Native", body: "SELECT 'it''s', 'a\\'b'", format: "Native"},
		{sql: "SELECT * FROM system.settings", body: "SELECT * FROM system.settings"},
		{sql: "SELECT 1 /* a /* b */ ; */ # x;\n#!y;\n", body: "SELECT 1"},
		{sql: "SELECT $a b$;'$a b$, x$y FORMAT JSON", body: "SELECT $a b$;'$a b$, x$y", format: "JSON"},
		{sql: "SHOW TABLES", body: "SHOW TABLES"},
		{sql: "DESC TABLE probes", body: "DESC TABLE probes"},
		{sql: "EXPLAIN SELECT 1", body: "EXPLAIN SELECT 1"},
		{sql: "EXISTS TABLE probes", body: "EXISTS TABLE probes"},

		{sql: "", code: codeSyntaxError},
		{sql: "FORMAT JSON", code: codeReadonly},
		{sql: "SELECT 1; SELECT 2", code: codeSyntaxError},
		{sql: "SELECT $x$;$x$; DROP TABLE t", code: codeSyntaxError},
		{sql: "SELECT $$'$$; DROP TABLE t; SELECT $$'$$", code: codeSyntaxError},
		{sql: "SELECT 'unterminated", code: codeSyntaxError},
		{sql: "SELECT 1 /* /* */ ' */ ; DROP TABLE t; SELECT '", code: codeSyntaxError}, // nested comment hides no quote
		{sql: "SELECT 1 /* /* */", code: codeSyntaxError},
		{sql: "SELECT $'$ ' $'$ ; DROP TABLE t; SELECT '", code: codeSyntaxError}, // the tag runs to the next '$'
		{sql: "SELECT a$b$ ; DROP TABLE t; SELECT $b$", code: codeSyntaxError},    // a$b$ is a word, not a heredoc
		{sql: "SELECT 1 #x; DROP TABLE t", code: codeSyntaxError},                 // '#' without space is no comment
		{sql: "SELECT 1 /* unterminated", code: codeSyntaxError},
		{sql: "INSERT INTO t VALUES (1)", code: codeReadonly},
		{sql: "(INSERT INTO t VALUES (1))", code: codeReadonly},
		{sql: "/* SELECT */ DROP TABLE t", code: codeReadonly},
		{sql: "SET readonly = 0", code: codeReadonly},
		{sql: "SYSTEM SHUTDOWN", code: codeReadonly},
		{sql: "SELECT 1 SETTINGS max_threads = 1", code: codeReadonly},
		{sql: "SELECT * FROM (SELECT 1 SETTINGS readonly = 0)", code: codeReadonly},
		{sql: "SELECT 1 INTO OUTFILE 'x'", code: codeReadonly},
	} {
		st, ex := parseStatement(c.sql)
		switch {
		case c.code != 0 && ex == nil:
			t.Errorf("%q: accepted as %+v, want code %d", c.sql, st, c.code)
		case c.code != 0 && ex.Code != c.code:
			t.Errorf("%q: code %d (%s), want %d", c.sql, ex.Code, ex.Text, c.code)
		case c.code == 0 && ex != nil:
			t.Errorf("%q: refused: %s", c.sql, ex.Text)
		case c.code == 0 && (st.body != c.body || st.format != c.format):
			t.Errorf("%q: body %q format %q, want %q %q", c.sql, st.body, st.format, c.body, c.format)
		}
	}
}

func TestSandbox(t *testing.T) {
	tableFunctions := map[string]bool{"file": true, "url": true, "merge": true, "numbers": true, "view": true}
	for _, c := range []struct {
		sql  string
		code int // 0: accepted
	}{
		{"SELECT name FROM system.tables", 0},
		{"SELECT system.columns.name FROM system.columns", 0},
		{"SELECT file, url, merge FROM t", 0}, // columns, not calls
		{"SELECT t.file(1)", 0},               // not the function file: a qualified name
		{"SELECT * FROM numbers(3)", 0},
		{"SELECT * FROM view(SELECT 1)", 0},
		{"SHOW TABLES FROM system", 0},
		{"SHOW CREATE TABLE probes", 0},

		{"SELECT FILE('/x')", codeAccessDenied}, // the engine would refuse it; so do we
		{"SELECT `file`('/x')", codeAccessDenied},
		{"SELECT * FROM Merge('system', 'processes')", codeAccessDenied},
		{"SELECT * FROM url ('http://x', 'TSV')", codeAccessDenied},
		{"SELECT * FROM view(SELECT file('/x'))", codeAccessDenied},
		{"SELECT * FROM system.stack_trace", codeAccessDenied},
		{"SELECT * FROM `system`.\"processes\"", codeAccessDenied},
		{"SELECT * FROM (SELECT * FROM system.processes)", codeAccessDenied},
		{"SELECT name, engine FROM system.tables WHERE database = currentDatabase()", 0},
		{"SELECT * FROM tunnel_stats, system.one", 0},
		{"SELECT * FROM system.tables", codeAccessDenied},
		{"SELECT t.* FROM system.databases AS t", codeAccessDenied},
		{"SELECT name, data_paths FROM system.tables", codeAccessDenied},
		{"SELECT `metadata_path` FROM system.databases", codeAccessDenied},
		{"SELECT COLUMNS('path') FROM system.tables", codeAccessDenied},
		{"SHOW PROCESSLIST", codeReadonly},
		{"(SHOW GRANTS)", codeReadonly},
	} {
		st, ex := parseStatement(c.sql)
		if ex == nil {
			ex = sandbox(st.toks, tableFunctions)
		}
		switch {
		case c.code == 0 && ex != nil:
			t.Errorf("%q refused: %v", c.sql, ex)
		case c.code != 0 && (ex == nil || ex.Code != c.code):
			t.Errorf("%q: %v, want code %d", c.sql, ex, c.code)
		}
	}
}

func TestScrubPaths(t *testing.T) {
	for in, want := range map[string]string{
		// The engine's own message for file('nonexist.csv'), seen with chDB 26.7.
		"Code: 400. DB::ErrnoException: Cannot stat file /work/wt/x/nonexist.csv: , errno: 2 (in file/uri /work/wt/x/nonexist.csv). (CANNOT_STAT)": "Code: 400. DB::ErrnoException: Cannot stat file <path> , errno: 2 (in file/uri <path>). (CANNOT_STAT)",
		"File is not inside '/var/lib/clickhouse/user_files/'":       "File is not inside '<path>'",
		"Unknown identifier a/b in scope SELECT a/b, 4 / 2, x":       "Unknown identifier a/b in scope SELECT a/b, 4 / 2, x",
		"Cannot open `/etc/shadow` (path=/etc/shadow, [/root/.ssh])": "Cannot open `<path>` (path=<path>, [<path>])",
	} {
		if got := scrubPaths(in); got != want {
			t.Errorf("scrubPaths(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}
