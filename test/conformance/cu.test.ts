// Parsing of iscsi-test-cu (CUnit verbose) output, on output captured from tgt 1.0.85.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseList, parseOutput, count, markdownReport } from './cu.js';

const SAMPLE = `

     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: Reserve6
  Test: Simple ...passed
  Test: 2Initiators ...    Take out a RESERVE6 from the first initiator
    MODE SENSE should fail from the second initiator
    [FAILED] MODESENSE6 successful but should have failed with NO SENSE(0x00)/NO ASCQ(0x0000)
    RELEASE6 from the second initiator
FAILED
    1. test_reserve6_2initiators.c:70  - CU_ASSERT_EQUAL(_r,0)
  Test: TargetColdReset ...    [SKIPPED] Task Management functionfor ColdReset is not working/implemented
passed
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. SENSE KEY:UNIT_ATTENTION(6) ASCQ:BUS_RESET(0x2900)
  Test: OwnershipEA ...    [FAILED] PRIN command: failed with sense: SENSE KEY:UNIT_ATTENTION(6) ASCQ:(null)(0x2a04)
FAILED
    1. test_prout_reserve_ownership.c:84  - CU_ASSERT_EQUAL(0,ret)

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      1      1    n/a      0        0
`;

test('verdicts: pass, fail with messages, skip, pass followed by a teardown log line', () => {
  const r = parseOutput('ALL.Reserve6', SAMPLE);
  assert.deepEqual(
    r.map((x) => [x.name, x.outcome]),
    [
      ['ALL.Reserve6.Simple', 'pass'],
      ['ALL.Reserve6.2Initiators', 'fail'],
      ['ALL.Reserve6.TargetColdReset', 'skip'],
      ['ALL.Reserve6.LUNReset', 'pass'],
      ['ALL.Reserve6.OwnershipEA', 'fail'],
    ],
  );
  assert.match(r[1]!.message, /MODESENSE6 successful/);
  assert.match(r[1]!.message, /test_reserve6_2initiators\.c:70/);
  assert.match(r[4]!.message, /0x2a04/);
  assert.deepEqual(count(r), { pass: 2, fail: 2, skip: 1 });
});

test('a test cut off without a verdict is a failure', () => {
  const r = parseOutput('ALL.X', 'Suite: X\n  Test: Hang ...    doing things\n');
  assert.equal(r.length, 1);
  assert.equal(r[0]!.outcome, 'fail');
  assert.match(r[0]!.message, /no verdict/);
});

test('--list parsing keeps the ALL family', () => {
  const m = parseList(
    'ALL\nALL.Read10\nALL.Read10.Simple\nALL.Read10.BeyondEol\nSCSI\nSCSI.Read10\nSCSI.Read10.Simple\nALL.iSCSITMF\nALL.iSCSITMF.AbortTaskSimpleAsync\n',
  );
  assert.deepEqual(
    [...m.entries()],
    [
      ['ALL.Read10', ['ALL.Read10.Simple', 'ALL.Read10.BeyondEol']],
      ['ALL.iSCSITMF', ['ALL.iSCSITMF.AbortTaskSimpleAsync']],
    ],
  );
});

test('markdown report lists totals and failures', () => {
  const runs = new Map([
    ['ALL.Reserve6', { suite: 'ALL.Reserve6', results: parseOutput('ALL.Reserve6', SAMPLE), seconds: 1, problem: '' }],
  ]);
  const md = markdownReport({ suites: ['ALL.Reserve6'], columns: [{ title: 'tgt', runs, note: 'n' }], header: '# H', regressions: [] });
  assert.match(md, /\| Reserve6 \| 5 \| 2\/2\/1 \| 1\.0 \|/);
  assert.match(md, /`ALL.Reserve6.2Initiators`/);
});
