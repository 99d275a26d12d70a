import cjs from './index.js'

export const { createSync, ConfigError } = cjs
export default cjs
