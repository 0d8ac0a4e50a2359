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
