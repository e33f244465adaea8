// ESLint over src/, test/ and bench/: typescript-eslint's strict type-checked rules (npm run lint).
// Adjustments, each with its reason:
// - no-non-null-assertion off: tsconfig has noUncheckedIndexedAccess, so every indexed read of a Buffer or
//   array is `T | undefined`; the PDU/CDB codecs check lengths first and then read with `!`, which states
//   that check where it is relied on.
// - restrict-template-expressions allows numbers and booleans: messages print sizes, codes and flags.
// - no-confusing-void-expression ignores arrow shorthands (`(r) => resolve(r)`), a common callback idiom.
// - no-floating-promises knows node:test's test/describe/it: the runner awaits what they return.
// - tests: no-unnecessary-condition off (see the block below).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const nodeGlobals = {
  process: 'readonly',
  console: 'readonly',
  Buffer: 'readonly',
  URL: 'readonly',
  setTimeout: 'readonly',
  clearTimeout: 'readonly',
};

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**'] },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [...tseslint.configs.strictTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      '@typescript-eslint/no-confusing-void-expression': ['error', { ignoreArrowShorthand: true }],
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'],
            },
          ],
        },
      ],
    },
  },
  {
    // Tests guard their cleanup (`server?.close()` in after()) against a before() that failed half-way, and
    // narrow protocol unions inline after an assertion: both are conditions TypeScript calls unnecessary.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-unnecessary-condition': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: nodeGlobals },
  },
);
