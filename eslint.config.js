// ESLint over src/, test/ and bench/: typescript-eslint's strict type-checked rules (npm run lint).
// Adjustments, each with its reason:
// - no-non-null-assertion off: tsconfig has noUncheckedIndexedAccess, so every indexed read of a Buffer or
//   array is `T | undefined`; the PDU/CDB codecs check lengths first and then read with `!`, which states
//   that check where it is relied on.
// - restrict-template-expressions allows numbers and booleans: messages print sizes, codes and flags.
// - no-confusing-void-expression ignores arrow shorthands (`(r) => resolve(r)`), a common callback idiom.
// - no-floating-promises knows node:test's test/describe/it: the runner awaits what they return.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'native/**'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
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
    files: ['**/*.mjs', '**/*.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly' } },
  },
);
