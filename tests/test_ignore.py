"""
.p2pignore patterns behave as gitignore patterns do.
"""

from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core.ignore import MAX_IGNORE_BYTES, IgnoreError, IgnoreRules

RULES = """
# build output
*.tmp
build/
/only-at-root.txt
**/cache
!keep.tmp
"""


class IgnoreTests(SynchronousTestCase):
    def setUp(self):
        self.rules = IgnoreRules.parse(RULES)

    def test_counts_patterns_not_comments_or_blanks(self):
        self.assertEqual(self.rules.lines, 5)

    def test_glob(self):
        self.assertTrue(self.rules.ignored("a.tmp"))
        self.assertTrue(self.rules.ignored("deep/down/a.tmp"))
        self.assertFalse(self.rules.ignored("a.tmpx"))

    def test_negation(self):
        self.assertFalse(self.rules.ignored("keep.tmp"))
        self.assertFalse(self.rules.ignored("sub/keep.tmp"))

    def test_directory_pattern_matches_the_directory_and_everything_in_it(self):
        self.assertTrue(self.rules.ignored("build", is_dir=True))
        self.assertTrue(self.rules.ignored("src/build", is_dir=True))
        self.assertTrue(self.rules.ignored("build/out.bin"))
        self.assertTrue(self.rules.ignored("build/x/keep.tmp"))  # no re-include inside
        self.assertFalse(self.rules.ignored("build"))  # a file named build is not a dir
        self.assertFalse(self.rules.ignored("builder/x"))

    def test_anchored(self):
        self.assertTrue(self.rules.ignored("only-at-root.txt"))
        self.assertFalse(self.rules.ignored("sub/only-at-root.txt"))

    def test_double_star(self):
        self.assertTrue(self.rules.ignored("a/b/cache", is_dir=True))
        self.assertTrue(self.rules.ignored("cache/x"))

    def test_ignore_file_itself_is_always_local(self):
        self.assertTrue(IgnoreRules.parse("").ignored(".p2pignore"))
        self.assertFalse(IgnoreRules.parse("").ignored("sub/.p2pignore"))

    def test_empty_ignores_nothing(self):
        rules = IgnoreRules.parse("# nothing\n\n")
        self.assertEqual(rules.lines, 0)
        self.assertFalse(rules.ignored("a.tmp"))

    def test_too_large_refused(self):
        with self.assertRaises(IgnoreError) as e:
            IgnoreRules.parse("x\n" * (MAX_IGNORE_BYTES // 2 + 1))
        self.assertIn("larger than", str(e.exception))

    def test_bad_pattern_names_its_line(self):
        with self.assertRaises(IgnoreError) as e:
            IgnoreRules.parse("ok\n!\n")
        self.assertIn("line 2", str(e.exception))
